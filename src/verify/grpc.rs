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
