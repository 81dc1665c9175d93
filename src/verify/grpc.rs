//! Envoy ext_authz v3 over gRPC (`envoy.service.auth.v3.Authorization/Check`,
//! for Envoy, Istio and Envoy Gateway), with the same meaning as
//! forward-auth: an OkHttpResponse that sets the `X-Keymint-*` headers
//! (overwriting any the client sent), or a DeniedHttpResponse with 401 or
//! 403 and `WWW-Authenticate`. A request without the attributes Envoy fills
//! in is a request without a key, never an RPC error.
//!
//! Projects come from the route's `context_extensions`, key `project`
//! (a comma-separated list, `*` for any); a route without it is denied
//! (INVALID_ARGUMENT, HTTP 400) unless the verifier has a
//! `--default-project`. A stale or unlisted index answers UNAVAILABLE
//! (HTTP 503).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use tonic::{Request, Response, Status};

use crate::verify::credential::{self, Credential};
use crate::verify::decision::{Denial, UNAVAILABLE_MESSAGE, Verdict};
use crate::verify::http::{grant_values, www_authenticate};
use crate::verify::metrics::Protocol;
use crate::verify::projects::{self, Projects, RouteError, Source};
use crate::verify::run::Shared;

/// The `context_extensions` key that names the projects a key must belong to.
pub const PROJECT_EXTENSION: &str = "project";

pub struct ExtAuthz {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let http = attributes.request.and_then(|r| r.http);
        let default = self.shared.default_project.as_deref();
        let projects = match projects(&attributes.context_extensions, default) {
            Ok(projects) => projects,
            Err(e) => return Ok(Response::new(misconfigured(&e))),
        };
        let verdict = self
            .shared
            .decide(Protocol::ExtAuthz, presented(http.as_ref()), &projects);
        Ok(Response::new(match verdict {
            Verdict::Valid(grant) => {
                let mut ok = OkHttpResponseBuilder::new();
                for (name, value) in grant_values(&grant) {
                    ok.add_header(
                        name,
                        value,
                        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                        false,
                    );
                }
                let mut response = CheckResponse::with_status(Status::ok(""));
                response.set_http_response(ok);
                response
            }
            Verdict::Denied { denial, .. } => denied(denial, denial.message()),
            Verdict::Unavailable => unavailable(),
        }))
    }
}

fn projects<'a>(
    extensions: &'a HashMap<String, String>,
    default: Option<&'a str>,
) -> Result<Projects<'a>, RouteError> {
    let named = extensions
        .get(PROJECT_EXTENSION)
        .map(|list| std::borrow::Cow::Borrowed(list.as_str()));
    projects::accepted(Source::Extension, named, default)
}

/// The credential among the request's headers: Envoy sends them in
/// `headers` (lowercased, repeated values joined by commas) or, with
/// `encode_raw_headers`, in `header_map`.
fn presented(http: Option<&HttpRequest>) -> Credential<'_> {
    let Some(http) = http else {
        return Credential::Absent;
    };
    let plain = http.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let raw = http.header_map.iter().flat_map(|m| &m.headers).map(|h| {
        let value = match h.raw_value.is_empty() {
            true => h.value.as_bytes(),
            false => h.raw_value.as_slice(),
        };
        (h.key.as_str(), value)
    });
    credential::from_headers(plain.chain(raw))
}

fn denied(denial: Denial, message: &str) -> CheckResponse {
    let (http_status, status) = match denial.forbidden() {
        true => (
            HttpStatusCode::Forbidden,
            Status::permission_denied(message),
        ),
        false => (
            HttpStatusCode::Unauthorized,
            Status::unauthenticated(message),
        ),
    };
    let mut refusal = DeniedHttpResponseBuilder::new();
    refusal
        .set_http_status(http_status)
        .add_header("www-authenticate", www_authenticate(denial), None, false)
        .set_body(message);
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(refusal);
    response
}

/// The route's configuration cannot say which projects it accepts:
/// INVALID_ARGUMENT, and HTTP 400 for the client, whatever the key.
fn misconfigured(e: &RouteError) -> CheckResponse {
    let message = e.to_string();
    let mut refusal = DeniedHttpResponseBuilder::new();
    refusal
        .set_http_status(HttpStatusCode::BadRequest)
        .set_body(message.clone());
    let mut response = CheckResponse::with_status(Status::invalid_argument(message));
    response.set_http_response(refusal);
    response
}

/// No answer from a stale or unlisted index: UNAVAILABLE, HTTP 503.
fn unavailable() -> CheckResponse {
    let mut refusal = DeniedHttpResponseBuilder::new();
    refusal
        .set_http_status(HttpStatusCode::ServiceUnavailable)
        .add_header("retry-after", "1", None, false)
        .set_body(UNAVAILABLE_MESSAGE);
    let mut response = CheckResponse::with_status(Status::unavailable(UNAVAILABLE_MESSAGE));
    response.set_http_response(refusal);
    response
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, Request};
    use prost::Message as _;

    use super::*;
    use crate::listener::limits::DEFAULT_GRPC_MAX_MESSAGE_BYTES;

    fn peer(ip: &str, port: u32) -> Option<Peer> {
        Some(Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..SocketAddress::default()
                })),
            }),
            ..Peer::default()
        })
    }

    /// What Envoy sends for a browser's API call: the request's headers
    /// (a session and analytics cookies, tracing, forwarding), its peers,
    /// the route's project.
    fn browser_check_request() -> CheckRequest {
        let cookie = format!(
            "session={}; _ga=GA1.2.{}; _gid=GA1.2.{}; consent={}; prefs={}",
            "s".repeat(700),
            "1".repeat(20),
            "2".repeat(20),
            "c".repeat(300),
            "p".repeat(200)
        );
        let headers: HashMap<String, String> = [
            (":authority", "api.example.com"),
            (":method", "GET"),
            (":path", "/v1/orders?limit=50&cursor=eyJpZCI6MTIzNDU2NzgsInRzIjoxNzAwMDAwMDAwfQ"),
            (":scheme", "https"),
            ("accept", "application/json, text/plain, */*"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-GB,en;q=0.9,de;q=0.8,fr;q=0.7"),
            ("authorization", "Bearer kmk_4dbZ1k9Xq3Lr8TnVw2Yc6Hs0Pj5Fg7Ma1Ne9Ru3Ko8Bi2Qt6Wx4Zy0Cv5Dl7E"),
            ("cookie", &cookie),
            ("origin", "https://app.example.com"),
            ("referer", "https://app.example.com/orders/overview?tab=recent"),
            ("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""),
            ("sec-ch-ua-mobile", "?0"),
            ("sec-ch-ua-platform", "\"macOS\""),
            ("sec-fetch-dest", "empty"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-site", "same-site"),
            ("user-agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("x-forwarded-for", "203.0.113.7, 10.0.3.12"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "9f1c2a7e-5b3d-4e8f-a6c1-0d2b4e6f8a10"),
            ("x-envoy-expected-rq-timeout-ms", "15000"),
            ("x-envoy-internal", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        CheckRequest {
            attributes: Some(AttributeContext {
                source: peer("10.0.3.12", 51234),
                destination: peer("10.0.7.40", 8080),
                request: Some(Request {
                    http: Some(HttpRequest {
                        id: "9f1c2a7e-5b3d-4e8f-a6c1-0d2b4e6f8a10".into(),
                        method: "GET".into(),
                        path:
                            "/v1/orders?limit=50&cursor=eyJpZCI6MTIzNDU2NzgsInRzIjoxNzAwMDAwMDAwfQ"
                                .into(),
                        host: "api.example.com".into(),
                        scheme: "https".into(),
                        protocol: "HTTP/2".into(),
                        headers,
                        ..HttpRequest::default()
                    }),
                    ..Request::default()
                }),
                context_extensions: [(PROJECT_EXTENSION.to_string(), "payments".to_string())]
                    .into(),
                ..AttributeContext::default()
            }),
        }
    }

    /// The measurement behind `--grpc-max-message-bytes`: a browser's
    /// request with its cookies is 2,584 bytes as a CheckRequest, far below
    /// the default, which is sized to Envoy's own header limit instead.
    #[test]
    fn a_browsers_check_request_fits_the_default_message_bound_many_times() {
        let size = browser_check_request().encoded_len();
        assert!((2_000..4_000).contains(&size), "measured {size} bytes");
        assert!(size * 10 < DEFAULT_GRPC_MAX_MESSAGE_BYTES as usize);
    }
}
