//! Building the API: the router (every route, its OpenAPI entry, the error fallbacks and the
//! middleware) and the [`Application`] that binds it to a port, so tests can start one on port 0.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router, middleware};
use switchboard::{AppContext, NodeError};
use switchboard_proto::names;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::HttpSettings;
use crate::database::Database;
use crate::error::ApiError;
use crate::http_metrics::{self, HttpMetrics};
use crate::live::LiveHub;
use crate::log_tail::LogTail;
use crate::openapi::{self, ApiDoc};
use crate::rate_limit::RateLimits;
use crate::reporting::Reporting;
use crate::request_id;
use crate::routes::{
    accounts, analytics, anomalies, events, logs, messages, nodes, operations, reports, rooms,
};
use crate::served_by;
use crate::session_cache::SessionCache;
use crate::state::{AppState, Pieces};
use crate::stream_slots::StreamSlots;
use crate::web;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The whole API as a router, and its OpenAPI document.
pub(crate) fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let served = served_by::layer(state.node.name());
    let body_timeout = Duration::from_millis(state.settings.body_timeout_ms.max(1));
    let metrics = HttpMetrics::register(state.node.metrics().registry());
    let (router, api) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::me))
        .routes(routes!(rooms::create_room, rooms::list_rooms))
        .routes(routes!(rooms::get_room))
        .routes(routes!(rooms::join_room))
        .routes(routes!(rooms::leave_room))
        .routes(routes!(rooms::list_members))
        .routes(routes!(messages::post_message, messages::list_messages))
        .routes(routes!(messages::edit_message, messages::delete_message))
        .routes(routes!(events::room_events))
        .routes(routes!(analytics::room_analytics))
        .routes(routes!(analytics::cluster_analytics))
        .routes(routes!(analytics::admin_room_analytics))
        .routes(routes!(operations::cluster))
        .routes(routes!(nodes::nodes))
        .routes(routes!(logs::query_logs))
        .routes(routes!(logs::tail_logs))
        .routes(routes!(reports::file_report))
        .routes(routes!(reports::list_reports))
        .routes(routes!(reports::resolve_report))
        .routes(routes!(anomalies::list_anomalies))
        .routes(routes!(anomalies::stream_anomalies))
        .routes(routes!(anomalies::report))
        .routes(routes!(operations::healthz))
        .routes(routes!(operations::readyz))
        .routes(routes!(operations::metrics))
        .split_for_parts();
    let api = openapi::with_common_errors(api);
    let document = Arc::new(api.clone());
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .merge(web::routes())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(middleware::from_fn_with_state(metrics, http_metrics::track))
        .layer(
            // Outermost first: an unusable client id is dropped before a fresh one is set
            // where none is, and the response echoes the id the request was served under.
            ServiceBuilder::new()
                .layer(middleware::map_request(request_id::drop_unusable))
                .layer(SetRequestIdLayer::x_request_id(request_id::Fresh))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(request_id::scope)),
        )
        .layer(middleware::map_response(served))
        .with_state(state);
    (router, api)
}

/// The API bound to its listener and serving.
#[derive(Debug)]
pub struct Application {
    port: u16,
}

impl Application {
    /// Binds `settings.http_listen`, joins the `chat.events` group for live events and serves
    /// until the application or its node starts draining.
    pub async fn build(context: &AppContext, settings: HttpSettings) -> Result<Self, NodeError> {
        let node = context.node();
        let listener = TcpListener::bind(&settings.http_listen)
            .await
            .map_err(|e| {
                NodeError::Config(format!("cannot listen on {}: {e}", settings.http_listen))
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| NodeError::Config(e.to_string()))?
            .port();
        let live = LiveHub::default();
        let hub = live.clone();
        context.join_group(names::CHAT_EVENTS, move |message| hub.deliver(message));
        let log_tail = LogTail::default();
        let tail = log_tail.clone();
        context.join_group(names::LOG_TAIL, move |message| tail.deliver(message));
        let sessions = Arc::new(SessionCache::new(Duration::from_millis(
            settings.session_cache_ms,
        )));
        let revocations = sessions.clone();
        context.register_service(
            names::HTTP_SESSIONS,
            switchboard::Immediate(move |request: switchboard::Request| {
                revocations.serve(&request)
            }),
        );
        let timeout = Duration::from_millis(settings.request_timeout_ms.max(1));
        let header_timeout = Duration::from_millis(settings.header_timeout_ms.max(1));
        let write_stall_timeout = Duration::from_millis(settings.write_stall_timeout_ms.max(1));
        let state = AppState::new(Pieces {
            database: Database::new(node.clone(), timeout),
            reporting: Reporting::new(node.clone(), timeout),
            streams: StreamSlots::new(
                settings.max_streams_per_user,
                settings.stream_open_rate_limit,
            ),
            limits: Arc::new(RateLimits::new(
                settings.rate_limit,
                settings.login_rate_limit,
            )),
            sessions,
            live,
            latency: switchboard_analytics::DeliveryLatency::start(context),
            log_tail,
            settings: Arc::new(settings),
            clock: nodes::NodeClock::start(context),
            draining: context.draining_token(),
            node: node.clone(),
        });
        let (app, _) = router(state);
        let draining = context.draining_token();
        let limits = crate::serve::Limits {
            header: header_timeout,
            write_stall: write_stall_timeout,
            stalled: crate::http_metrics::stalled_connections(node.metrics().registry()),
        };
        context.spawn_tracked(crate::serve::serve(
            listener,
            app,
            limits,
            draining.cancelled_owned(),
        ));
        tracing::info!(port, "http API listening");
        Ok(Self { port })
    }

    /// The port the API listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}
