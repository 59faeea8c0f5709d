//! One typed way for the http node to call another service through the runtime: a deadline per
//! call, the request id as trace id, and an explicit idempotency flag per method, which is what
//! lets the runtime retry a call on another replica when one dies mid-call.

use std::time::Duration;

use switchboard::{CallOptions, Node, NodeError};

use crate::request_id;

/// A service, by name, as the http node calls it.
#[derive(Debug, Clone)]
pub(crate) struct ServiceClient {
    node: Node,
    service: &'static str,
    timeout: Duration,
}

impl ServiceClient {
    pub(crate) fn new(node: Node, service: &'static str, timeout: Duration) -> Self {
        Self {
            node,
            service,
            timeout,
        }
    }

    /// Calls `method` with protobuf messages on both sides.
    pub(crate) async fn call<Req, Resp>(
        &self,
        method: &'static str,
        request: &Req,
        idempotent: bool,
    ) -> Result<Resp, NodeError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.call_within(method, request, idempotent, self.timeout)
            .await
    }

    /// As [`ServiceClient::call`], with a deadline of its own.
    pub(crate) async fn call_within<Req, Resp>(
        &self,
        method: &'static str,
        request: &Req,
        idempotent: bool,
        timeout: Duration,
    ) -> Result<Resp, NodeError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let options = CallOptions {
            timeout: Some(timeout),
            idempotent,
            trace_id: Some(request_id::current())
                .filter(|id| !id.is_empty())
                .map(Into::into),
            ..CallOptions::default()
        };
        self.node
            .call_message(self.service, method, request, options)
            .await
    }
}
