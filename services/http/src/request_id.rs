//! Request ids: every response carries `X-Request-Id` (the client's, if it sent a sane one), the
//! id is in the request's log span and error body, and it travels as the trace id of every call
//! the request makes to other nodes, so one request can be followed across the cluster.
//!
//! tower-http's request-id layers give a request without an id a fresh one ([`Fresh`]) and echo
//! the id on the response (see the router in `startup.rs`). Two things are this module's own: a
//! client's id is kept only if it is short and plain ([`drop_unusable`]), since it is written
//! into logs and carried as a trace id; and the request is served in the id's span and
//! task-local ([`scope`]), so that code far from the request (the error body, every call to
//! another node) reads it with [`current`].

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::Instrument;

/// The header name.
const HEADER: &str = "x-request-id";

/// The longest client id kept.
const LONGEST: usize = 64;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served by this task; empty outside a request.
pub(crate) fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Makes the id of a request that brought none: a fresh trace id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fresh;

impl MakeRequestId for Fresh {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&switchboard::new_trace_id())
            .ok()
            .map(RequestId::new)
    }
}

/// Middleware, before [`Fresh`]: removes a client's id that is empty, long, or holds anything
/// but ASCII letters, digits, `-`, `_` and `.`, so the request gets a fresh one instead.
pub(crate) async fn drop_unusable(mut request: Request) -> Request {
    let usable = request.headers().get(HEADER).is_none_or(|value| {
        value.to_str().is_ok_and(|id| {
            !id.is_empty()
                && id.len() <= LONGEST
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    });
    if !usable {
        request.headers_mut().remove(HEADER);
    }
    request
}

/// Middleware, after the id is set: runs the request in its id's task-local and span.
pub(crate) async fn scope(request: Request, next: Next) -> Response {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map_or_else(switchboard::new_trace_id, str::to_owned);
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    REQUEST_ID
        .scope(id, next.run(request).instrument(span))
        .await
}
