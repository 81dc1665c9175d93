//! API errors in words: what a Warning Event, a condition or a log line
//! says when a call to the API server fails.

/// The API server's own words for an API error, with its code and reason
/// (`namespaces "x" not found (404 NotFound)`), instead of the client's
/// debug dump of the whole response; other errors (connection, timeout,
/// TLS) as they display.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}
