//! The OpenAPI 3 document, generated from the handlers' annotations by utoipa. The router is
//! built from the same annotations (utoipa-axum), so the document cannot list a route the
//! server lacks, or miss one it has.
//!
//! The errors every operation of a kind can answer, whatever its handler does (a malformed body,
//! a missing token, the rate limit, no database node), are added to each operation by
//! [`with_common_errors`] rather than repeated in every annotation, so that no handler can forget
//! one. Schemathesis (`tests/schemathesis/run.sh`) holds every response to the document.

use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// The document's fixed parts; paths are added as routes are registered.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "A chat API served by a cluster of Erlang-style Rust nodes."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Registration and sessions"),
        (name = "rooms", description = "Rooms and membership"),
        (name = "messages", description = "Messages and live events"),
        (name = "moderation", description = "Content reports, anomalies and summaries"),
        (name = "admin", description = "Operators' views (SWITCHBOARD_ADMIN_TOKEN)"),
        (name = "operations", description = "Health, readiness and metrics")
    )
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["bearer", "admin"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// `api` with the errors each kind of operation can answer added where its annotation does not
/// list them:
/// - every operation of the chat API (`/v1/...`): 400 (a path or query parameter that does not
///   parse) and 503 (no database node answered within the deadline);
/// - with a request body: 408 (the body stalled), 413 (over the body limit), 415 (not JSON), and
///   400 for JSON that does not parse;
/// - of the chat API, with a body or parameters: 422 (a value out of its limits);
/// - with a bearer token: 401 (missing, unknown or expired) and 429 (the per-user rate limit).
pub(crate) fn with_common_errors(mut api: OpenApi) -> OpenApi {
    for (path, item) in api.paths.paths.iter_mut() {
        let chat_api = path.starts_with("/v1/");
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_common_errors(operation, chat_api);
        }
    }
    api
}

fn add_common_errors(operation: &mut Operation, chat_api: bool) {
    let has_body = operation.request_body.is_some();
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let errors = [
        (
            chat_api || has_body,
            "400",
            "A body, path or query parameter that does not parse",
        ),
        (
            authenticated,
            "401",
            "The bearer token is missing, unknown or expired",
        ),
        (
            has_body,
            "408",
            "The request body did not arrive within the body timeout",
        ),
        (has_body, "413", "The request body is over 64 KiB"),
        (
            has_body,
            "415",
            "The request body is not `application/json`",
        ),
        (
            chat_api && (has_body || has_parameters),
            "422",
            "A field, parameter or header out of its limits; the body names it",
        ),
        (
            authenticated,
            "429",
            "Over the per-user rate limit; `Retry-After` says when to retry",
        ),
        (
            chat_api,
            "503",
            "No database node answered within the deadline; safe to retry",
        ),
    ];
    for (applies, status, description) in errors {
        if applies && !operation.responses.responses.contains_key(status) {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build();
            operation
                .responses
                .responses
                .insert(status.to_owned(), RefOr::T(response));
        }
    }
}
