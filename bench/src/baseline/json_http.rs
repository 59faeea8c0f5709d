//! The JSON-over-HTTP baseline: what a conventional microservice call costs. An axum server
//! echoes a JSON body; the client is hyper-util's legacy client over HTTP/1.1 with a keep-alive
//! pool (one connection per request in flight, reused). TCP_NODELAY is set on both ends.

use anyhow::{Context, ensure};
use axum::Json;
use axum::routing::post;
use axum::serve::ListenerExt;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::server_process::announce;

/// The request and reply body.
#[derive(Debug, Serialize, Deserialize)]
struct EchoBody {
    payload: String,
}

async fn echo(Json(body): Json<EchoBody>) -> Json<EchoBody> {
    Json(body)
}

/// `serve-http`: the JSON echo endpoint (`POST /echo`) on a loopback port, until killed.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    announce(listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new().route("/echo", post(echo));
    axum::serve(listener, app)
        .await
        .context("the JSON echo server failed")
}

/// hyper-util's legacy client over HTTP/1.1 with TCP_NODELAY and a keep-alive pool that keeps
/// every connection it opens (one per request in flight), as a conventional service client does.
pub(crate) fn keep_alive_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// A pooled keep-alive HTTP/1.1 client for the endpoint; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct JsonClient {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
}

impl JsonClient {
    pub(crate) fn new(address: &str) -> anyhow::Result<Self> {
        let client = keep_alive_client();
        let uri = format!("http://{address}/echo")
            .parse()
            .context("the JSON echo URI")?;
        Ok(Self { client, uri })
    }

    /// One JSON round trip, encoding the request and decoding and checking the reply.
    pub(crate) async fn echo(&self, payload: &str) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&EchoBody {
            payload: payload.to_owned(),
        })?;
        let request = hyper::Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.client.request(request).await?;
        ensure!(
            response.status().is_success(),
            "the JSON echo answered {}",
            response.status()
        );
        let bytes = response.into_body().collect().await?.to_bytes();
        let reply: EchoBody = serde_json::from_slice(&bytes)?;
        ensure!(reply.payload.len() == payload.len(), "a wrong JSON echo");
        Ok(())
    }
}
