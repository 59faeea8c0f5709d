//! The OpenAPI 3 document, generated from the handlers' annotations by utoipa. The router is
//! built from the same annotations (utoipa-axum), so the document cannot list a route the
//! server lacks, or miss one it has.

use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

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
