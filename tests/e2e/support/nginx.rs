//! nginx (Debian's package) on loopback for one test, with `auth_request`
//! to the verifier in front of an upstream: the configuration docs/gateways.md
//! documents. Config and logs in a directory of their own; nginx runs in
//! the foreground as a child and is killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{control_plane, eventually, raw_http};

static STARTED: AtomicUsize = AtomicUsize::new(0);

pub struct Nginx {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Nginx {
    /// nginx on a free loopback port: every request to it must carry a key
    /// of `project` that `verifier` (its HTTP address) accepts before it
    /// reaches `upstream`.
    pub async fn start(verifier: SocketAddr, upstream: SocketAddr, project: &str) -> Nginx {
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = control_plane()
            .kubeconfig()
            .parent()
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join(format!("nginx-{n}"));
        std::fs::create_dir_all(&dir).expect("nginx directory");
        let addr = free_port();
        let config = dir.join("nginx.conf");
        std::fs::write(
            &config,
            configuration(&dir, addr, verifier, upstream, project),
        )
        .expect("write nginx.conf");
        let log = std::fs::File::create(dir.join("stderr.log")).expect("nginx log");
        let mut command = Command::new(nginx_binary());
        command
            .args([
                "-p",
                &dir.to_string_lossy(),
                "-c",
                &config.to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        crate::support::dies_with_the_test(&mut command);
        let child = command
            .spawn()
            .expect("start nginx (apt-get install nginx-light)");
        let nginx = Nginx {
            child: Some(child),
            addr,
            dir,
        };
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        nginx
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// `GET path` through nginx with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> raw_http::Reply {
        raw_http::get(self.addr, path, headers).await
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is installed (.ci/run installs Debian's nginx-light)")
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("addr")
}

/// docs/gateways.md's nginx configuration ("nginx (`auth_request`) — tested"),
/// with test paths and ports. A client's
/// own `X-Keymint-*` headers never reach the upstream: `proxy_set_header`
/// replaces them with what the verifier answered (and drops them when it
/// answered nothing), and the key itself is not passed on.
fn configuration(
    dir: &std::path::Path,
    listen: SocketAddr,
    verifier: SocketAddr,
    upstream: SocketAddr,
    project: &str,
) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream keymint_verifier {{
        server {verifier};
        keepalive 16;
    }}

    server {{
        listen {listen};

        location / {{
            auth_request /_keymint;
            auth_request_set $keymint_owner   $upstream_http_x_keymint_owner;
            auth_request_set $keymint_project $upstream_http_x_keymint_project;
            auth_request_set $keymint_key_id  $upstream_http_x_keymint_key_id;
            auth_request_set $keymint_apikey  $upstream_http_x_keymint_apikey;
            proxy_set_header X-Keymint-Owner   $keymint_owner;
            proxy_set_header X-Keymint-Project $keymint_project;
            proxy_set_header X-Keymint-Key-Id  $keymint_key_id;
            proxy_set_header X-Keymint-ApiKey  $keymint_apikey;
            proxy_set_header Authorization "";
            proxy_set_header X-API-Key "";
            proxy_pass http://{upstream};
        }}

        location = /_keymint {{
            internal;
            proxy_pass http://keymint_verifier/forward-auth?project={project};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}
