//! Same-origin calls to `/api/...` (as behind CloudFront), typed with the wire crate. Every
//! answer is timed on the device clock so the caller can sync to the server's clock.

use firstcome_wire::{ErrorBody, ErrorCode};
use gloo_net::http::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use web_sys::RequestCache;

use crate::retry::parse_retry_after;

/// A call that did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The API answered with an error body.
    Api { status: u16, body: ErrorBody, retry_after: Option<f64> },
    /// Something answered without an error body (a proxy, a gateway timeout).
    Http { status: u16, retry_after: Option<f64> },
    /// The identity provider (Cognito) refused: wrong password, user exists, weak password...
    Identity { status: u16, kind: String, message: String },
    /// No answer at all.
    Network(String),
}

impl Failure {
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Api { status, .. } | Failure::Http { status, .. } | Failure::Identity { status, .. } => {
                Some(*status)
            }
            Failure::Network(_) => None,
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Failure::Api { body, .. } => Some(body.error),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<f64> {
        match self {
            Failure::Api { retry_after, .. } | Failure::Http { retry_after, .. } => *retry_after,
            Failure::Identity { .. } | Failure::Network(_) => None,
        }
    }

    /// Worth retrying by itself: overload, an unavailable store, a gateway hiccup, no network.
    pub fn is_transient(&self) -> bool {
        matches!(self.status(), None | Some(429 | 502 | 503 | 504))
    }

    /// Says nothing of what the server did with a write: a request timeout (408) or an internal
    /// error (500: API Gateway's answer when a function times out) may come after the write
    /// applied. A claim answered so is checked (`claims/me`) before anything is said.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.status(), Some(408 | 500))
    }

    pub fn is_network(&self) -> bool {
        matches!(self, Failure::Network(_))
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Api { body, .. } => body.message.clone(),
            Failure::Http { status, .. } => format!("HTTP {status}"),
            Failure::Identity { message, .. } => message.clone(),
            Failure::Network(e) => e.clone(),
        }
    }

    /// The field an `invalid_request` blames, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Failure::Api { body, .. } => body.field.as_deref(),
            _ => None,
        }
    }
}

/// A successful answer, with when it was sent and received on the device clock (ms).
pub struct Answer<T> {
    pub status: u16,
    pub value: T,
    pub etag: Option<String>,
    pub sent_ms: f64,
    pub received_ms: f64,
    /// Served from a cache (`Age`, `X-Cache`): not a clock sample.
    pub cached: bool,
}

/// One request. `fresh`: bypass the browser cache (clock samples must not be a second old).
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub token: Option<&'a str>,
    /// A JSON body (see `to_json`).
    pub body: Option<String>,
    pub if_match: Option<&'a str>,
    /// The claim ticket (`Firstcome-Ticket`).
    pub ticket: Option<u64>,
    pub fresh: bool,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str) -> Self {
        Self { method: Method::GET, path, token: None, body: None, if_match: None, ticket: None, fresh: false }
    }

    pub fn post(path: &'a str) -> Self {
        Self { method: Method::POST, ..Self::get(path) }
    }

    pub fn token(self, token: Option<&'a str>) -> Self {
        Self { token, ..self }
    }

    pub fn ticket(self, ticket: Option<u64>) -> Self {
        Self { ticket, ..self }
    }

    pub fn fresh(self) -> Self {
        Self { fresh: true, ..self }
    }

    pub async fn json<T: DeserializeOwned>(self) -> Result<Answer<T>, Failure> {
        let (status, etag, cached, text, sent_ms, received_ms) = self.raw().await?;
        let value = from_json(&text).ok_or_else(|| Failure::Network("unreadable answer".into()))?;
        Ok(Answer { status, value, etag, sent_ms, received_ms, cached })
    }

    /// The body as text (the CSV download).
    pub async fn text(self) -> Result<String, Failure> {
        Ok(self.raw().await?.3)
    }

    async fn raw(self) -> Result<(u16, Option<String>, bool, String, f64, f64), Failure> {
        let mut req = RequestBuilder::new(self.path).method(self.method);
        if self.fresh {
            req = req.cache(RequestCache::NoStore);
        }
        if let Some(t) = self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        if let Some(m) = self.if_match {
            req = req.header("If-Match", m);
        }
        if let Some(n) = self.ticket {
            req = req.header(firstcome_ticket::HEADER, &n.to_string());
        }
        let req = match self.body {
            Some(b) => req.header("Content-Type", "application/json").body(b),
            None => req.build(),
        }
        .map_err(|e| Failure::Network(e.to_string()))?;
        let sent_ms = js_sys::Date::now();
        let res = req.send().await.map_err(|e| Failure::Network(e.to_string()))?;
        let received_ms = js_sys::Date::now();
        let status = res.status();
        let headers = res.headers();
        let retry_after = headers.get("retry-after").as_deref().and_then(parse_retry_after);
        let etag = headers.get("etag");
        let cached = crate::clock::from_a_cache(headers.get("age").as_deref(), headers.get("x-cache").as_deref());
        let text = res.text().await.map_err(|e| Failure::Network(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok((status, etag, cached, text, sent_ms, received_ms));
        }
        Err(match from_json::<ErrorBody>(&text) {
            Some(body) => Failure::Api { status, body, retry_after },
            None => Failure::Http { status, retry_after },
        })
    }
}

/// Serialises `value` as JSON text, through the browser's `JSON.stringify`.
pub fn to_json<T: Serialize>(value: &T) -> String {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .ok()
        .and_then(|v| js_sys::JSON::stringify(&v).ok())
        .and_then(|s| s.as_string())
        .unwrap_or_default()
}

/// Parses JSON text with the browser's `JSON.parse` and maps it onto `T`.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Option<T> {
    serde_wasm_bindgen::from_value(js_sys::JSON::parse(text).ok()?).ok()
}

/// Milliseconds since the Unix epoch, as the JS clock counts.
pub fn millis(t: time::OffsetDateTime) -> f64 {
    (t.unix_timestamp_nanos() / 1_000_000) as f64
}

/// Waits `ms` on the browser's timer.
pub async fn sleep(ms: f64) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = web_sys::window()
            .expect("a window")
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms.clamp(0.0, 2_147_483_647.0) as i32);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
