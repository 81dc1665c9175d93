//! The verifier's HTTP endpoints: forward-auth (nginx `auth_request`,
//! ingress-nginx `auth-url`, Traefik ForwardAuth, Envoy ext_authz in HTTP
//! mode) and `POST /v1/verify` (JSON) on the serving port; `/metrics`,
//! `/healthz` and `/readyz` on the probe port, so that no load on the
//! serving port can fail a probe.
//! Bad input gets a quick 4xx; a presented key is never echoed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;

use crate::verify::credential::{self, Credential};
use crate::verify::decision::{Denial, Grant, UNAVAILABLE_MESSAGE, Verdict};
use crate::verify::metrics::Protocol;
use crate::verify::projects::{self, Projects, RouteError, Source};
use crate::verify::run::Shared;

/// The headers a valid key's request gets, on every protocol.
pub const OWNER: &str = "x-keymint-owner";
pub const PROJECT: &str = "x-keymint-project";
pub const KEY_ID: &str = "x-keymint-key-id";
pub const API_KEY: &str = "x-keymint-apikey";

/// The projects a key must belong to, on `/forward-auth/<original path>`:
/// set by the proxy (Envoy's `authorization_request.headers_to_add`,
/// Istio's `includeAdditionalHeadersInCheck`, both of which replace a
/// client's header of that name), comma-separated.
pub const REQUIRE_PROJECT: &str = "x-keymint-require-project";

/// A `/v1/verify` body is a key and a project name: 4 KiB is plenty, and a
/// bigger body is refused (413) before it is read.
const MAX_BODY: usize = 4 * 1024;

/// A whole request, body included, must arrive within this (else 408).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router(shared: Arc<Shared>) -> Router {
    let routes = Router::new()
        .route("/forward-auth", any(forward_auth))
        .route("/forward-auth/", any(forward_auth_prefixed))
        .route("/forward-auth/{*original}", any(forward_auth_prefixed))
        .route("/v1/verify", post(verify_json));
    guarded(routes).with_state(shared)
}

/// The probe port's routes: liveness, readiness and metrics.
pub fn probe_router(shared: Arc<Shared>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    guarded(routes).with_state(shared)
}

/// The body limit and the request timeout around `routes` (the benchmark's
/// floor server wraps its routes in the same).
pub fn guarded<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// The credential of an HTTP request.
pub fn presented(headers: &HeaderMap) -> Credential<'_> {
    credential::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
}

// The handlers take the request whole: a `HeaderMap` extractor would copy
// every header of every request.

/// The bare route (nginx, ingress-nginx, Traefik): the projects come from
/// its own query, which is the proxy's configuration, never from a header
/// (these proxies forward the client's headers).
async fn forward_auth(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let default = shared.default_project.as_deref();
    match projects::from_query(request.uri().query(), default) {
        Ok(projects) => forward_auth_verdict(&shared, request.headers(), &projects),
        Err(e) => misconfigured(&e),
    }
}

/// Envoy's ext_authz HTTP mode and Istio's `envoyExtAuthzHttp` append the
/// original path — and its query, the client's — to the configured prefix.
/// So the query is not read here; the projects come from
/// [`REQUIRE_PROJECT`], which the proxy sets.
async fn forward_auth_prefixed(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let headers = request.headers();
    let required = headers.get_all(REQUIRE_PROJECT);
    if required.iter().any(|v| v.to_str().is_err()) {
        return (
            StatusCode::BAD_REQUEST,
            "x-keymint-require-project is not text",
        )
            .into_response();
    }
    let values = required
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(std::borrow::Cow::Borrowed);
    let default = shared.default_project.as_deref();
    match projects::accepted(Source::Header, values, default) {
        Ok(projects) => forward_auth_verdict(&shared, headers, &projects),
        Err(e) => misconfigured(&e),
    }
}

/// 400: the route's configuration cannot say which projects it accepts,
/// whatever the key (a gateway shows it as its own error, not as the
/// client's).
fn misconfigured(e: &RouteError) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

/// 503 with `Retry-After`: no answer from a stale or unlisted index.
fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
        UNAVAILABLE_MESSAGE,
    )
        .into_response()
}

/// 200 with the grant's headers, the refusal, or 503.
fn forward_auth_verdict(shared: &Shared, headers: &HeaderMap, projects: &Projects<'_>) -> Response {
    match shared.decide(Protocol::ForwardAuth, presented(headers), projects) {
        Verdict::Valid(grant) => granted(&grant),
        Verdict::Denied { denial, .. } => refusal(denial),
        Verdict::Unavailable => unavailable(),
    }
}

/// 200 with the four `X-Keymint-*` headers, written into the response
/// itself: this is every valid request's path, and a map in between cost
/// an allocation and a copy of each header. 500 if a value cannot be a
/// header (an owner with control characters).
fn granted(grant: &Grant) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    for (name, value) in grant_values(grant) {
        let Ok(value) = HeaderValue::from_str(value) else {
            return unsendable();
        };
        headers.insert(HeaderName::from_static(name), value);
    }
    response
}

/// (header name, value) of a grant, for every protocol.
pub fn grant_values(grant: &Grant) -> [(&'static str, &str); 4] {
    [
        (OWNER, &grant.owner),
        (PROJECT, &grant.project),
        (KEY_ID, &grant.key_id),
        (API_KEY, &grant.api_key),
    ]
}

/// Not bad input: the ApiKey's owner (which the API server let in) has a
/// character no HTTP header may carry.
fn unsendable() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the ApiKey's owner cannot be sent in an HTTP header",
    )
        .into_response()
}

/// `WWW-Authenticate` of a refusal (RFC 6750): no error code when no key
/// was sent, `insufficient_scope` for another project, else `invalid_token`.
pub fn www_authenticate(denial: Denial) -> String {
    match denial {
        Denial::Missing => "Bearer realm=\"keymint\"".to_string(),
        Denial::WrongProject => format!(
            "Bearer realm=\"keymint\", error=\"insufficient_scope\", error_description=\"{}\"",
            denial.message()
        ),
        _ => format!(
            "Bearer realm=\"keymint\", error=\"invalid_token\", error_description=\"{}\"",
            denial.message()
        ),
    }
}

/// 401 (or 403 for another project) with `WWW-Authenticate`.
fn refusal(denial: Denial) -> Response {
    let status = match denial.forbidden() {
        true => StatusCode::FORBIDDEN,
        false => StatusCode::UNAUTHORIZED,
    };
    let challenge = HeaderValue::from_str(&www_authenticate(denial))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"keymint\""));
    (
        status,
        [(header::WWW_AUTHENTICATE, challenge)],
        denial.message(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct VerifyRequest {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    project: Option<String>,
}

/// The JSON answer: every field present, null when it does not apply.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyResponse<'a> {
    valid: bool,
    reason: &'static str,
    owner: Option<&'a str>,
    project: Option<&'a str>,
    key_id: Option<&'a str>,
    api_key: Option<&'a str>,
    expires_at: Option<String>,
}

async fn verify_json(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    // Fixed message: a serde error could quote the body, key included.
    let Ok(request) = serde_json::from_slice::<VerifyRequest>(&body) else {
        return bad_json_request(
            "the body must be JSON: {\"key\": \"kmk_...\", \"project\": \"<name>, or * for any\"}",
        );
    };
    let named = request.project.as_deref().map(std::borrow::Cow::Borrowed);
    let projects = match projects::accepted(Source::Body, named, shared.default_project.as_deref())
    {
        Ok(projects) => projects,
        Err(e) => return bad_json_request(&e.to_string()),
    };
    let presented = match request.key.as_deref() {
        None | Some("") => Credential::Absent,
        Some(key) => Credential::Key(key),
    };
    let verdict = shared.decide(Protocol::Json, presented, &projects);
    let grant = match &verdict {
        Verdict::Valid(grant) => Some(grant),
        Verdict::Denied { .. } | Verdict::Unavailable => None,
    };
    let status = match verdict {
        Verdict::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Verdict::Valid(_) | Verdict::Denied { .. } => StatusCode::OK,
    };
    let answer = axum::Json(VerifyResponse {
        valid: grant.is_some(),
        reason: verdict.outcome(),
        owner: grant.map(|g| &*g.owner),
        project: grant.map(|g| &*g.project),
        key_id: verdict.key_id(),
        api_key: grant.map(|g| &*g.api_key),
        expires_at: grant.and_then(|g| g.expires_at).map(|t| t.to_string()),
    });
    (status, answer).into_response()
}

/// 400 with `{"valid": false, "reason": "bad-request", "error": ...}`.
fn bad_json_request(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({
            "valid": false,
            "reason": "bad-request",
            "error": error,
        })),
    )
        .into_response()
}

/// 200 while checks are answered; 503 saying why not.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let freshness = &shared.freshness;
    if freshness.available() {
        return (StatusCode::OK, "ready").into_response();
    }
    let why = match freshness.ever_listed() {
        false => "index not listed yet".to_string(),
        true => format!(
            "index older than --max-staleness ({} s): no proof from the API server that it is current",
            freshness.max().as_secs_f64()
        ),
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    crate::runtime::http::openmetrics(shared.metrics.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(owner: &str) -> Grant {
        Grant {
            api_key: "team-a/ci".into(),
            owner: owner.into(),
            project: "payments".into(),
            key_id: "km_7Hq2xK9pLm3Q".into(),
            expires_at: None,
        }
    }

    #[test]
    fn a_grant_is_200_with_its_four_headers() {
        let response = granted(&grant("alice@example.com"));
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        for (name, value) in [
            (OWNER, "alice@example.com"),
            (PROJECT, "payments"),
            (KEY_ID, "km_7Hq2xK9pLm3Q"),
            (API_KEY, "team-a/ci"),
        ] {
            assert_eq!(
                headers.get(name).map(HeaderValue::as_bytes),
                Some(value.as_bytes())
            );
        }
    }

    #[test]
    fn an_owner_no_header_can_carry_is_a_500_not_a_grant() {
        let response = granted(&grant("alice\nx-keymint-owner: root"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(OWNER).is_none());
    }
}
