//! The browser side of the http node: the chat client at `GET /` and the operators' dashboard at
//! `GET /dashboard`, plain HTML, CSS and JavaScript modules from `services/http/web/`, embedded in
//! the binary so every http node serves them with nothing to install or fetch.
//!
//! The pages hold no secret and are public; what they show comes from the JSON API, with the
//! user's bearer token (chat) or the admin token the operator pastes in (dashboard) sent as an
//! `Authorization` header, never in a URL. Every page is served with a Content-Security-Policy
//! that allows scripts, styles and connections from this origin only, and no inline script or
//! style: whatever a message body holds, it cannot run in the page.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The policy of every page and asset. `connect-src 'self'` keeps the API calls (and so the
/// tokens) on this origin; `frame-ancestors 'none'` keeps the pages out of other sites' frames.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../web/", $name)),
        }
    };
}

/// The files under `/assets/<version>/`. A page names them with their version (a digest of them) in
/// the path, and modules import each other by relative paths, so a new release is fetched afresh as
/// a whole (never one new module beside an old one); within a release they may be cached for a
/// day. Any version segment is answered with this build's files.
const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("sse.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("chat.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("charts.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

const CHAT_PAGE: &str = include_str!("../web/index.html");
const DASHBOARD_PAGE: &str = include_str!("../web/dashboard.html");
static CHAT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static DASHBOARD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The routes of the pages and their assets.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page(&CHAT, CHAT_PAGE) }))
        .route(
            "/dashboard",
            get(|| async { page(&DASHBOARD, DASHBOARD_PAGE) }),
        )
        .route("/assets/{version}/{name}", get(asset))
}

/// Headers every page and asset carries.
fn secured(content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}

/// A page, with the assets' version stamped into its links; revalidated on every load.
fn page(stamped: &'static std::sync::OnceLock<String>, template: &'static str) -> Response {
    let body = stamped.get_or_init(|| template.replace("{version}", &version()));
    secured("text/html; charset=utf-8", "no-cache", body)
}

/// The assets' version: a digest of their contents, so any change to any of them is a new
/// version even when the crate's version stays the same.
fn version() -> String {
    let mut digest = Sha256::new();
    for asset in ASSETS {
        digest.update(asset.name.as_bytes());
        digest.update(asset.body.as_bytes());
    }
    hex::encode(&digest.finalize()[..6])
}

async fn asset(
    axum::extract::Path((_version, name)): axum::extract::Path<(String, String)>,
) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => secured(asset.content_type, "public, max-age=86400", asset.body),
        None => ApiError::not_found().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_a_page_names_is_served() {
        for page in [CHAT_PAGE, DASHBOARD_PAGE] {
            for link in page.split("/assets/").skip(1) {
                let path = link.split('"').next().unwrap_or_default();
                let name = path.rsplit('/').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|asset| asset.name == name),
                    "a page links /assets/{name}, which is not embedded"
                );
            }
        }
    }

    #[test]
    fn pages_hold_no_inline_script_or_style() {
        for page in [CHAT_PAGE, DASHBOARD_PAGE] {
            assert!(!page.contains("<script>"), "inline script");
            assert!(!page.contains("<style"), "inline style");
            assert!(!page.contains(" style="), "inline style attribute");
            let handler = page.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "inline event handler");
        }
    }
}
