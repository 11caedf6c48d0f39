//! A local stand-in for an OpenAI-compatible embeddings endpoint: `POST
//! /v1/embeddings` on 127.0.0.1, answering in OpenAI's shape with vectors
//! derived from the input text, with switchable failure modes and a count
//! of the requests it saw.
//!
//! The answer lists `data[]` in reverse order, so a client that ignores
//! `index` fails every test with more than one input.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The dimension of the vectors the server returns.
pub const DIMENSION: usize = 8;

/// How the server answers a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// A correct answer.
    Ok,
    /// This HTTP status with an OpenAI-style error body.
    Status(u16),
    /// HTTP 429 with this `Retry-After` value.
    RateLimited { retry_after: String },
    /// HTTP 429 with OpenAI's `insufficient_quota` code.
    QuotaExhausted,
    /// One vector fewer than inputs.
    WrongCount,
    /// The last vector one dimension longer than the others.
    MixedDimensions,
    /// Every vector `DIMENSION + 1` long.
    OtherDimension,
    /// A body that is not JSON.
    Garbage,
    /// A correct answer after this delay.
    Slow(Duration),
    /// Every vector `DIMENSION` times this value, whatever the text: a
    /// server that answers under any model name with vectors of its own.
    Constant(f32),
}

#[derive(Debug)]
struct Shared {
    /// Modes for the next requests, in order; then `fallback`.
    script: VecDeque<Mode>,
    fallback: Mode,
    /// When set, requests without `Authorization: Bearer <key>` get a 401.
    api_key: Option<String>,
    requests: Vec<Recorded>,
}

/// What a request carried.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub model: String,
    pub inputs: Vec<String>,
    pub authorization: Option<String>,
}

/// A running stand-in server; stops when dropped.
pub struct EmbedServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl EmbedServer {
    /// Starts a server that answers every request correctly.
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            script: VecDeque::new(),
            fallback: Mode::Ok,
            api_key: None,
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the embeddings stand-in on 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("embeddings stand-in server");
        });
        EmbedServer { addr, shared, task }
    }

    /// The base URL a client is configured with, e.g. `http://127.0.0.1:1234/v1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answers every later request with `mode`.
    pub fn set_mode(&self, mode: Mode) {
        let mut shared = self.shared.lock().unwrap();
        shared.script.clear();
        shared.fallback = mode;
    }

    /// Answers the next requests with `modes`, one each, then with `then`.
    pub fn script(&self, modes: impl IntoIterator<Item = Mode>, then: Mode) {
        let mut shared = self.shared.lock().unwrap();
        shared.script = modes.into_iter().collect();
        shared.fallback = then;
    }

    /// Requires `Authorization: Bearer <key>` from now on.
    pub fn require_api_key(&self, key: &str) {
        self.shared.lock().unwrap().api_key = Some(key.to_string());
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.shared.lock().unwrap().requests.len()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().unwrap().requests.clone()
    }
}

impl Drop for EmbedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The vector the server returns for `text`: from its SHA-256, so equal
/// texts get equal vectors and different texts (almost surely) differ.
pub fn fake_embedding(text: &str) -> Vec<f32> {
    let digest = Sha256::digest(text.as_bytes());
    digest
        .chunks(32 / DIMENSION)
        .map(|bytes| {
            let n = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
            n as f32 / u32::MAX as f32 * 2.0 - 1.0
        })
        .collect()
}

async fn embeddings(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let request: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}"), None),
    };
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let inputs: Vec<String> = match request["input"].as_array() {
        Some(items) => items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        None => return error(StatusCode::BAD_REQUEST, "input must be a list", None),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let (mode, required_key) = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(Recorded {
            model: model.clone(),
            inputs: inputs.clone(),
            authorization: authorization.clone(),
        });
        let mode = shared
            .script
            .pop_front()
            .unwrap_or_else(|| shared.fallback.clone());
        (mode, shared.api_key.clone())
    };

    if let Some(key) = required_key
        && authorization.as_deref() != Some(&format!("Bearer {key}"))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            Some("invalid_api_key"),
        );
    }

    let mut vectors: Vec<Vec<f32>> = inputs.iter().map(|t| fake_embedding(t)).collect();
    match mode {
        Mode::Ok => {}
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).expect("valid status");
            return error(status, "the stand-in was told to fail", None);
        }
        Mode::RateLimited { retry_after } => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached",
                Some("rate_limit_exceeded"),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after).expect("header value"),
            );
            return response;
        }
        Mode::QuotaExhausted => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "You exceeded your current quota",
                Some("insufficient_quota"),
            );
        }
        Mode::WrongCount => {
            vectors.pop();
        }
        Mode::MixedDimensions => {
            if let Some(last) = vectors.last_mut() {
                last.push(0.5);
            }
        }
        Mode::OtherDimension => vectors.iter_mut().for_each(|v| v.push(0.5)),
        Mode::Garbage => {
            return (StatusCode::OK, "<html><body>welcome</body></html>").into_response();
        }
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Constant(value) => vectors.iter_mut().for_each(|v| v.fill(value)),
    }

    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .rev()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "code": code}});
    (status, axum::Json(body)).into_response()
}
