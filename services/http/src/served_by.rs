//! `X-Served-By`: every response names the http node that made it, so a client behind a load
//! balancer (and an operator reading its logs) can tell the replicas apart.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

/// The header name.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-served-by");

/// Middleware (for `middleware::map_response`) that adds `X-Served-By: <node>` to a response.
/// A node name that is not a valid header value adds nothing.
pub(crate) fn layer(
    node_name: &str,
) -> impl Fn(Response) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    let value = HeaderValue::from_str(node_name).ok();
    move |mut response: Response| {
        if let Some(value) = &value {
            response.headers_mut().insert(HEADER, value.clone());
        }
        std::future::ready(response)
    }
}
