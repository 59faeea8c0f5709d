//! The `analytics` service a replica advertises once bootstrapped: `report` (the figures of a
//! window, cluster-wide or for one room) and `latency_state` (everything it holds of delivery
//! latency, for a replica that is starting). Both are reads of the replica's own aggregates, so
//! callers may send them to any replica, and retry on another.

use prost::Message;
use switchboard::service::ServiceFuture;
use switchboard::{Bytes, Request, Service, ServiceError};
use switchboard_proto::v1 as wire;

use crate::aggregates::Window;
use crate::feed::{Shared, lock};
use crate::now_ms;

/// The service over one replica's aggregates.
#[derive(Debug, Clone)]
pub(crate) struct AnalyticsService {
    state: Shared,
}

impl AnalyticsService {
    pub(crate) fn new(state: Shared) -> Self {
        Self { state }
    }

    fn dispatch(&self, request: &Request) -> Result<Bytes, ServiceError> {
        match &*request.method {
            "report" => {
                let r = wire::AnalyticsRequest::decode(&request.payload[..]).map_err(|e| {
                    ServiceError::new("invalid_request", format!("malformed request: {e}"))
                })?;
                let window = Window::parse(&r.window).ok_or_else(|| {
                    ServiceError::new("invalid_window", "the window must be 1h, 24h or 7d")
                })?;
                let room = (r.room_id != 0).then_some(r.room_id);
                let report = lock(&self.state).report(room, window, now_ms());
                Ok(report.encode_to_vec().into())
            }
            "latency_state" => Ok(lock(&self.state).latency.state().encode_to_vec().into()),
            other => Err(ServiceError::new(
                "unknown_method",
                format!("the analytics service has no method {other}"),
            )),
        }
    }
}

impl Service for AnalyticsService {
    fn handle(&self, request: Request) -> ServiceFuture {
        let result = self.dispatch(&request);
        Box::pin(async move { result })
    }
}
