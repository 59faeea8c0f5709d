//! The chaos run's load, written to the history: keyed posts to the rooms from several writers
//! (each retried with the same `Idempotency-Key` on 502/503/504 or a connection error until
//! acknowledged or the run ends), edits and deletes of acknowledged posts, SSE clients that
//! reconnect with `Last-Event-ID` whenever cut off, and periodic analytics and admin reads.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::history::History;
use crate::baseline::json_http::keep_alive_client;

/// How long one request may take before it counts as a connection error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the balancer; cheap to clone.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// One answer: the status (0 for a connection error or timeout) and the JSON body, if any.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) error: Option<String>,
}

impl Http {
    /// A client of `base` (`http://host:port`).
    pub(crate) fn new(base: &str) -> Self {
        Self {
            client: keep_alive_client(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// Sends one request with an optional bearer token, JSON body and idempotency key.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Answer {
        let send = async {
            let mut request = Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            let bytes = match body {
                Some(body) => {
                    request = request.header("content-type", "application/json");
                    Bytes::from(serde_json::to_vec(body)?)
                }
                None => Bytes::new(),
            };
            let response = self.client.request(request.body(Full::new(bytes))?).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
            Ok(Ok((status, bytes))) => Answer {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                error: None,
            },
            Ok(Err(error)) => Answer {
                status: 0,
                body: Value::Null,
                error: Some(format!("{error:#}")),
            },
            Err(_) => Answer {
                status: 0,
                body: Value::Null,
                error: Some("timeout".into()),
            },
        }
    }
}

/// Whether a keyed request that got `status` is retried with the same key.
pub(crate) fn retriable(status: u16) -> bool {
    matches!(status, 0 | 502 | 503 | 504)
}

/// What the load shares: the API, the users' tokens, the rooms, the history and the end signal.
#[derive(Clone)]
pub(crate) struct Load {
    pub(crate) http: Http,
    pub(crate) tokens: Vec<String>,
    pub(crate) admin: String,
    pub(crate) rooms: Vec<i64>,
    pub(crate) history: History,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Load {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sends a request until it is acknowledged (not retriable) or the run ends; records each try.
    #[allow(clippy::too_many_arguments)]
    async fn until_acknowledged(
        &self,
        client: &str,
        op: &str,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        key: Option<&str>,
        extra: &Value,
    ) -> Option<Answer> {
        loop {
            let answer = self
                .http
                .call(method.clone(), path, Some(token), body, key)
                .await;
            let mut fields = extra.clone();
            fields["status"] = json!(answer.status);
            fields["id"] = answer.body.get("id").cloned().unwrap_or(Value::Null);
            fields["seq"] = answer.body.get("seq").cloned().unwrap_or(Value::Null);
            if let Some(error) = &answer.error {
                fields["error"] = json!(error);
            }
            self.history.record(client, op, fields);
            if !retriable(answer.status) {
                return Some(answer);
            }
            if self.stopped() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One writer: a post every `interval` to a room in turn, every 8th followed by an edit of an
    /// earlier acknowledged post and every 20th by a delete.
    pub(crate) async fn writer(self, index: usize, interval: Duration) {
        let client = format!("writer-{index}");
        let token = self.tokens[index % self.tokens.len()].clone();
        let mut acked: Vec<(i64, i64)> = Vec::new();
        let mut ticker = tokio::time::interval(interval);
        let mut n = 0u64;
        while !self.stopped() {
            ticker.tick().await;
            n += 1;
            let room = self.rooms[(index + n as usize) % self.rooms.len()];
            let key = format!("{client}-{n}");
            let body = json!({ "body": format!("{key}") });
            let extra = json!({ "key": key, "room": room });
            let path = format!("/v1/rooms/{room}/messages");
            let answer = self
                .until_acknowledged(
                    &client,
                    "post",
                    Method::POST,
                    &path,
                    &token,
                    Some(&body),
                    Some(&key),
                    &extra,
                )
                .await;
            if let Some(id) = answer
                .filter(|a| a.status == 201)
                .and_then(|a| a.body.get("id").and_then(Value::as_i64))
            {
                acked.push((room, id));
            }
            if n.is_multiple_of(8) && acked.len() > 2 {
                let (room, id) = acked[acked.len() - 2];
                let body = json!({ "body": format!("{client}-edit-{n}") });
                let extra = json!({ "room": room, "target": id, "body": body["body"] });
                self.until_acknowledged(
                    &client,
                    "edit",
                    Method::PATCH,
                    &format!("/v1/rooms/{room}/messages/{id}"),
                    &token,
                    Some(&body),
                    None,
                    &extra,
                )
                .await;
            }
            if n.is_multiple_of(20) && acked.len() > 3 {
                let (room, id) = acked.remove(acked.len() - 3);
                let extra = json!({ "room": room, "target": id });
                self.until_acknowledged(
                    &client,
                    "delete",
                    Method::DELETE,
                    &format!("/v1/rooms/{room}/messages/{id}"),
                    &token,
                    None,
                    None,
                    &extra,
                )
                .await;
            }
        }
    }

    /// Periodic reads: a room's analytics and the admin cluster table, every second.
    pub(crate) async fn reader(self) {
        let mut n = 0usize;
        while !self.stopped() {
            n += 1;
            let room = self.rooms[n % self.rooms.len()];
            let path = format!("/v1/rooms/{room}/analytics?window=1h");
            let a = self
                .http
                .call(Method::GET, &path, Some(&self.tokens[0]), None, None)
                .await;
            self.history.record(
                "reader",
                "analytics",
                json!({ "room": room, "status": a.status, "error": a.error }),
            );
            let a = self
                .http
                .call(
                    Method::GET,
                    "/v1/admin/cluster",
                    Some(&self.admin),
                    None,
                    None,
                )
                .await;
            self.history.record(
                "reader",
                "admin_cluster",
                json!({ "status": a.status, "error": a.error }),
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// One SSE client of `room`: reads events, and reconnects with `Last-Event-ID` whenever cut
    /// off, until the run ends (and then `linger` longer, to receive what was posted last).
    pub(crate) async fn sse_client(self, index: usize, room: i64, linger: Duration) {
        let client = format!("sse-{index}");
        let token = self.tokens[index % self.tokens.len()].clone();
        let mut last: Option<String> = None;
        let mut stop = self.stop.clone();
        let deadline = async {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(linger).await;
        };
        tokio::pin!(deadline);
        loop {
            let session = self.sse_session(&client, &token, room, &mut last);
            tokio::select! {
                () = &mut deadline => break,
                () = session => {}
            }
            tokio::select! {
                () = &mut deadline => break,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        self.history
            .record(&client, "sse_end", json!({ "room": room, "last": last }));
    }

    /// One connection of an SSE client, recording each event, until it ends or fails.
    async fn sse_session(&self, client: &str, token: &str, room: i64, last: &mut Option<String>) {
        let mut request = Request::get(format!("{}/v1/rooms/{room}/events", self.http.base))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream");
        if let Some(last) = last.as_deref() {
            request = request.header("last-event-id", last);
        }
        let Ok(request) = request.body(Full::new(Bytes::new())) else {
            return;
        };
        let response =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.http.client.request(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    self.history.record(
                    client,
                    "sse_connect",
                    json!({ "room": room, "status": 0, "error": error.to_string(), "last": last }),
                );
                    return;
                }
                Err(_) => {
                    self.history.record(
                        client,
                        "sse_connect",
                        json!({ "room": room, "status": 0, "error": "timeout", "last": last }),
                    );
                    return;
                }
            };
        let status = response.status().as_u16();
        self.history.record(
            client,
            "sse_connect",
            json!({ "room": room, "status": status, "last": last }),
        );
        if status != 200 {
            return;
        }
        let mut body = BodyStream::new(response.into_body());
        let mut buffer = String::new();
        let (mut event, mut id, mut data) = (String::new(), None::<String>, String::new());
        while let Some(frame) = body.next().await {
            let Ok(frame) = frame else { break };
            let Ok(bytes) = frame.into_data() else {
                continue;
            };
            buffer.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = buffer.find('\n') {
                let line = buffer[..end].trim_end_matches('\r').to_string();
                buffer.drain(..=end);
                if line.is_empty() {
                    if !event.is_empty() || id.is_some() {
                        let parsed: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        self.history.record(
                            client,
                            "sse_event",
                            json!({
                                "room": room,
                                "event": event,
                                "cursor": id,
                                "id": parsed.get("id"),
                                "seq": parsed.get("seq"),
                            }),
                        );
                        if id.is_some() {
                            last.clone_from(&id);
                        }
                    }
                    (event, id, data) = (String::new(), None, String::new());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
        }
        self.history
            .record(client, "sse_cut", json!({ "room": room, "last": last }));
    }
}
