//! The `database` service. This node joins the cluster and advertises `database`; the service's own
//! behaviour arrives with its issue, and until then it answers only `status`.

use switchboard::{Bytes, Cookie, Node, NodeBuilder, NodeConfig, NodeError, Request, ServiceError};

/// The service name this node advertises.
pub const SERVICE: &str = "database";

/// Starts a node hosting the `database` service.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    NodeBuilder::new(SERVICE, config, cookie)
        .service(SERVICE, handle)
        .start()
        .await
}

async fn handle(request: Request) -> Result<Bytes, ServiceError> {
    match request.method.as_str() {
        "status" => Ok(Bytes::from_static(b"ok")),
        other => Err(ServiceError::new(
            "unknown_method",
            format!("{SERVICE} has no method {other}"),
        )),
    }
}
