//! An upstream for the tests that put the verifier behind a real proxy
//! (nginx, Traefik): it answers every request with the headers it got and
//! counts the requests, so a test sees what the proxy passed on — and that a
//! refused request never arrived.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;

/// An upstream that answers every request with the headers it got (as
/// JSON: lowercase name → values) and remembers how many it answered.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<usize>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let requests = Arc::new(Mutex::new(0));
        let counter = requests.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                *counter.lock().expect("lock") += 1;
                let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in &headers {
                    seen.entry(name.as_str().to_string())
                        .or_default()
                        .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
                }
                axum::Json(seen)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { addr, requests }
    }

    /// How many requests reached the upstream so far.
    pub fn requests(&self) -> usize {
        *self.requests.lock().expect("lock")
    }
}
