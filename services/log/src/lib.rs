//! The log node: the cluster's activity log. It keeps no state of its own. Each batch a node
//! ships (`append`) is redacted again, written through the `database` service in one
//! transaction, acknowledged only once committed, and the entries that were new are broadcast to
//! the `log.tail` group (http nodes tail it to admins, reporting nodes watch it for anomalies).
//! `query` reads pages of the log back. Any log replica can die: shippers fail over to another,
//! and entry ids make a retried batch harmless.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use switchboard::activity;
use switchboard::application::{SharedApplication, StartFuture};
use switchboard::service::ServiceFuture;
use switchboard::{
    AppContext, Application, Applications, Bytes, CallOptions, Cookie, Node, NodeConfig, NodeError,
    Request, Service, ServiceError,
};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

/// Entries accepted in one `append`.
const MAX_BATCH: usize = 5000;
/// Deadline of the database write behind one `append`.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a node hosting the `log` application alone.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    let catalog: Vec<SharedApplication> = vec![Arc::new(LogApp)];
    let (node, _) = Applications::boot(names::LOG, config, cookie, catalog, &[names::LOG]).await?;
    Ok(node)
}

/// The `log` application: the `log` service, and nothing else, since it keeps no state.
#[derive(Debug, Default)]
pub struct LogApp;

impl Application for LogApp {
    fn name(&self) -> &'static str {
        names::LOG
    }

    fn start<'a>(&'a self, context: &'a AppContext) -> StartFuture<'a> {
        Box::pin(async move {
            context.register_service(names::LOG, LogService::new(context.node().clone()));
            Ok(())
        })
    }
}

/// The `log` service.
#[derive(Debug, Clone)]
pub struct LogService {
    node: Arc<Node>,
}

impl LogService {
    /// Serves through `node`.
    pub fn new(node: Node) -> Self {
        Self {
            node: Arc::new(node),
        }
    }

    async fn dispatch(&self, request: Request) -> Result<Bytes, ServiceError> {
        match &*request.method {
            "append" => {
                let batch = wire::LogBatch::decode(request.payload).map_err(malformed)?;
                self.append(batch, request.trace_id).await
            }
            "query" => {
                let query = wire::LogQuery::decode(request.payload).map_err(malformed)?;
                let options = CallOptions::idempotent().trace(request.trace_id);
                let page: wire::LogPage = self
                    .node
                    .call_message(names::DATABASE, "query_logs", &query, options)
                    .await?;
                Ok(page.encode_to_vec().into())
            }
            other => Err(ServiceError::new(
                "unknown_method",
                format!("the log service has no method {other}"),
            )),
        }
    }

    async fn append(
        &self,
        mut batch: wire::LogBatch,
        trace_id: switchboard::ByteString,
    ) -> Result<Bytes, ServiceError> {
        if batch.entries.len() > MAX_BATCH {
            return Err(ServiceError::new(
                "batch_too_large",
                format!("at most {MAX_BATCH} entries per batch"),
            ));
        }
        batch
            .entries
            .retain(|entry| !entry.id.is_empty() && entry.id.len() <= 64);
        for entry in &mut batch.entries {
            activity::redact(entry);
        }
        let options = CallOptions::idempotent()
            .timeout(WRITE_TIMEOUT)
            .trace(trace_id);
        let stored: wire::LogBatch = self
            .node
            .call_message(names::DATABASE, "append_logs", &batch, options)
            .await?;
        let count = stored.entries.len() as u32;
        if count > 0 {
            // Tails are watched, not waited on: they must never slow the writes they follow.
            self.node.broadcast_background(
                names::LOG_TAIL,
                names::LOG_BATCH,
                stored.encode_to_vec(),
            );
        }
        Ok(wire::AppendReply { stored: count }.encode_to_vec().into())
    }
}

fn malformed(error: prost::DecodeError) -> ServiceError {
    ServiceError::new("invalid_request", format!("malformed request: {error}"))
}

impl Service for LogService {
    fn handle(&self, request: Request) -> ServiceFuture {
        let service = self.clone();
        Box::pin(async move { service.dispatch(request).await })
    }
}
