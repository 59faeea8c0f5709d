//! The chat's HTTP API as the bench drives it, the way a real client would: register users (each
//! gets a bearer token), create and join a room, post messages with an `Idempotency-Key`, open a
//! room's Server-Sent Events stream, and read the plain-text endpoints (`/readyz`, `/metrics`).
//!
//! It is hyper-util's legacy client over HTTP/1.1 keep-alive, the same client as the JSON/HTTP
//! baseline ([`keep_alive_client`]): one connection per request in flight, reused. Anything but
//! the expected status is an error carrying the reply's body, so a refused post aborts the point
//! with the server's own explanation.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::baseline::json_http::keep_alive_client;

/// Every registered user's password (the API wants at least 8 characters).
const PASSWORD: &str = "correct horse battery";

/// How long a set-up request (register, join, a scrape) may take. Registration hashes the
/// password with argon2id on the http node, tens of milliseconds each on a busy machine.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A logged-in user: the `Authorization` header that carries their token.
#[derive(Debug, Clone)]
pub(crate) struct User {
    authorization: HeaderValue,
}

impl User {
    /// The `Authorization` header's value, for requests written by hand.
    pub(crate) fn authorization(&self) -> &str {
        self.authorization.to_str().unwrap_or("")
    }
}

/// A client of one http node; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub(crate) struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port`.
    base: String,
}

impl Api {
    /// A client of the http node listening on `address` (`host:port`).
    pub(crate) fn new(address: &str) -> Self {
        Self {
            client: keep_alive_client(),
            base: format!("http://{address}"),
        }
    }

    /// `base` + `path` as a URI.
    pub(crate) fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        format!("{}{path}", self.base)
            .parse()
            .with_context(|| format!("the URI of {path}"))
    }

    /// Sends one request and returns the response, headers read and body not yet.
    async fn send(
        &self,
        method: Method,
        uri: Uri,
        user: Option<&User>,
        json: Option<Bytes>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(user) = user {
            request = request.header(AUTHORIZATION, user.authorization.clone());
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let body = match json {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                json
            }
            None => Bytes::new(),
        };
        Ok(self.client.request(request.body(Full::new(body))?).await?)
    }

    /// A set-up request that must answer `expected`; returns the reply's JSON.
    async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<&User>,
        body: Value,
        expected: StatusCode,
    ) -> anyhow::Result<Value> {
        let json = Bytes::from(serde_json::to_vec(&body)?);
        let send = async {
            let response = self
                .send(method.clone(), self.uri(path)?, user, Some(json), None)
                .await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(SETUP_TIMEOUT, send)
            .await
            .with_context(|| format!("{method} {path} took over {SETUP_TIMEOUT:?}"))??;
        if status != expected {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        serde_json::from_slice(&bytes).with_context(|| format!("the reply to {method} {path}"))
    }

    /// Registers `username` and returns them logged in.
    pub(crate) async fn register(&self, username: &str) -> anyhow::Result<User> {
        let reply = self
            .call(
                Method::POST,
                "/v1/auth/register",
                None,
                json!({ "username": username, "password": PASSWORD }),
                StatusCode::CREATED,
            )
            .await?;
        let token = reply["token"]
            .as_str()
            .context("a session without a token")?;
        Ok(User {
            authorization: HeaderValue::try_from(format!("Bearer {token}"))?,
        })
    }

    /// Creates room `name` (its creator is its first member) and returns its id.
    pub(crate) async fn create_room(&self, owner: &User, name: &str) -> anyhow::Result<i64> {
        let reply = self
            .call(
                Method::POST,
                "/v1/rooms",
                Some(owner),
                json!({ "name": name, "topic": "switchboard-bench" }),
                StatusCode::CREATED,
            )
            .await?;
        reply["id"].as_i64().context("a room without an id")
    }

    /// Joins `room`.
    pub(crate) async fn join(&self, user: &User, room: i64) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/v1/rooms/{room}/join"),
            Some(user),
            json!({}),
            StatusCode::OK,
        )
        .await?;
        Ok(())
    }

    /// `POST /v1/rooms/{room}/messages` (its URI is `messages`) with `body` and `key` as the
    /// `Idempotency-Key`; anything but 201 is an error carrying the reply.
    pub(crate) async fn post(
        &self,
        user: &User,
        messages: &Uri,
        body: &str,
        key: &str,
    ) -> anyhow::Result<()> {
        let json = Bytes::from(serde_json::to_vec(&json!({ "body": body }))?);
        let response = self
            .send(
                Method::POST,
                messages.clone(),
                Some(user),
                Some(json),
                Some(key),
            )
            .await?;
        let status = response.status();
        let reply = response.into_body().collect().await?.to_bytes();
        ensure!(
            status == StatusCode::CREATED,
            "a post answered {status}: {}",
            String::from_utf8_lossy(&reply)
        );
        Ok(())
    }

    /// Opens `GET /v1/rooms/{room}/events` and returns the streaming body once it answered 200.
    pub(crate) async fn events(&self, user: &User, room: i64) -> anyhow::Result<Incoming> {
        let request = Request::get(self.uri(&format!("/v1/rooms/{room}/events"))?)
            .header(AUTHORIZATION, user.authorization.clone())
            .header(ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        let response = tokio::time::timeout(SETUP_TIMEOUT, self.client.request(request))
            .await
            .context("opening an event stream timed out")??;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let reply = response.into_body().collect().await?.to_bytes();
            bail!(
                "an event stream answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(response.into_body())
    }

    /// `GET path` as text, with its status (for `/readyz` and `/metrics`).
    pub(crate) async fn text(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let get = async {
            let response = self
                .send(Method::GET, self.uri(path)?, None, None, None)
                .await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(SETUP_TIMEOUT, get)
            .await
            .with_context(|| format!("GET {path} took over {SETUP_TIMEOUT:?}"))?
    }
}
