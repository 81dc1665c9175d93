//! nginx with and without `auth_request` in front of the same upstream.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ratio;
use super::wrk::{Load, wrk};
use crate::Result;
use crate::cluster::REPO;
/// `check` is the verifier's path and query (`/forward-auth?project=...`).
pub(super) fn compare(
    verifier: SocketAddr,
    check: &str,
    bearer: &str,
    seconds: u64,
) -> Result<Value> {
    let dir = Path::new(REPO).join("target/bench/nginx");
    std::fs::create_dir_all(&dir)?;
    let front = free_port()?;
    let upstream = free_port()?;
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_config(&dir, front, upstream, verifier, check),
    )?;
    let mut command = Command::new("/usr/sbin/nginx");
    command
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: as for the servers above.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(front).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("nginx did not start; see target/bench/nginx/error.log".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let alone = wrk(
        &format!("http://{front}/alone/"),
        bearer,
        Load::Peak,
        seconds,
    );
    let auth = wrk(
        &format!("http://{front}/auth/"),
        bearer,
        Load::Peak,
        seconds,
    );
    let _ = child.kill();
    let _ = child.wait();
    let (alone, auth) = (alone?, auth?);
    Ok(json!({"alone": alone.json(), "auth_request": auth.json(),
              "throughput_ratio": ratio(auth.rps, alone.rps)}))
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// One nginx worker; keep-alive connections to the upstream and to the
/// verifier, as a production configuration would have.
fn nginx_config(
    dir: &Path,
    front: SocketAddr,
    upstream: SocketAddr,
    verifier: SocketAddr,
    check: &str,
) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{ server {upstream}; keepalive 64; }}
    upstream keymint_verifier {{ server {verifier}; keepalive 64; }}
    server {{ listen {upstream}; location / {{ return 200 "ok\n"; }} }}
    server {{
        listen {front};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /alone/ {{ proxy_pass http://app; }}
        location /auth/ {{
            auth_request /_keymint;
            auth_request_set $keymint_owner $upstream_http_x_keymint_owner;
            proxy_set_header X-Keymint-Owner $keymint_owner;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
        location = /_keymint {{
            internal;
            proxy_pass http://keymint_verifier{check};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}
