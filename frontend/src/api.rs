//! Same-origin calls to `/api/...` (as behind CloudFront), typed with the wire crate. Every
//! answer is timed on the device clock so the caller can sync to the server's clock.

use firstcome_wire::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, RequestCache, RequestInit, Response};

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
        Self { method: Method::Get, path, token: None, body: None, if_match: None, ticket: None, fresh: false }
    }

    pub fn post(path: &'a str) -> Self {
        Self { method: Method::Post, ..Self::get(path) }
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
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(t) = self.token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        if let Some(m) = self.if_match {
            headers.push(("If-Match", m.to_owned()));
        }
        if let Some(n) = self.ticket {
            headers.push((firstcome_ticket::HEADER, n.to_string()));
        }
        if self.body.is_some() {
            headers.push(("Content-Type", "application/json".to_owned()));
        }
        let sent_ms = js_sys::Date::now();
        let res = fetch(self.method, self.path, &headers, self.body.as_deref(), self.fresh).await?;
        let received_ms = js_sys::Date::now();
        let status = res.status();
        let header = |name: &str| res.headers().get(name).ok().flatten();
        let retry_after = header("retry-after").as_deref().and_then(parse_retry_after);
        let etag = header("etag");
        let cached = crate::clock::from_a_cache(header("age").as_deref(), header("x-cache").as_deref());
        let text = body_text(&res).await?;
        if (200..300).contains(&status) {
            return Ok((status, etag, cached, text, sent_ms, received_ms));
        }
        Err(match from_json::<ErrorBody>(&text) {
            Some(body) => Failure::Api { status, body, retry_after },
            None => Failure::Http { status, retry_after },
        })
    }
}

/// The methods the page sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
        }
    }
}

/// What a rejected promise or a thrown exception says, for a `Failure::Network`.
fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "network error".into())
}

/// One `fetch` with the browser's own API (gloo-net's wrapper cost 2 KiB gzip of WASM for what
/// these few lines do). `no_store`: bypass the browser cache.
pub async fn fetch(
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
    no_store: bool,
) -> Result<Response, Failure> {
    let network = |e: JsValue| Failure::Network(js_message(&e));
    let init = RequestInit::new();
    init.set_method(method.as_str());
    let h = Headers::new().map_err(network)?;
    for (name, value) in headers {
        h.set(name, value).map_err(network)?;
    }
    init.set_headers(&h);
    if let Some(b) = body {
        init.set_body(&JsValue::from_str(b));
    }
    if no_store {
        init.set_cache(RequestCache::NoStore);
    }
    let window = web_sys::window().ok_or_else(|| Failure::Network("no window".into()))?;
    let res = JsFuture::from(window.fetch_with_str_and_init(url, &init)).await.map_err(network)?;
    res.dyn_into::<Response>().map_err(network)
}

/// The answer's body as text.
pub async fn body_text(res: &Response) -> Result<String, Failure> {
    let network = |e: JsValue| Failure::Network(js_message(&e));
    let text = JsFuture::from(res.text().map_err(network)?).await.map_err(network)?;
    Ok(text.as_string().unwrap_or_default())
}

/// Serialises `value` as JSON text (serde_json writes less WASM than building a JS object to
/// stringify: 0.3 KiB gzip per bundle).
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
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
