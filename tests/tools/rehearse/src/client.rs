//! A pooled keep-alive HTTP/1.1 JSON client over http or https (rustls), for the rehearsal's
//! setup and checks (the load itself goes through `load`'s raw connections).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad request")]
    Build(#[from] hyper::http::Error),
    #[error("request failed")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("reading the response body failed")]
    Body(#[from] hyper::Error),
    #[error("response is not JSON")]
    Json(#[from] serde_json::Error),
    /// The user pool refused (wrong password, user exists, weak password...).
    #[error("{}: {}", .0.kind, .0.message)]
    Cognito(firstcome_wire::site::cognito::Error),
    #[error("the user pool answered {0} without an error body")]
    CognitoStatus(u16),
}

/// A pooled keep-alive HTTP/1.1 client speaking JSON.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// Speaks http, and https trusting the Mozilla roots.
    pub fn new() -> Self {
        Self::with_tls(&crate::net::client_config(None).expect("no CA file to read"))
    }

    /// Speaks http, and https with this rustls configuration (e.g. one trusting a private CA).
    pub fn with_tls(tls: &Arc<rustls::ClientConfig>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        // The TLS layer hands `https://` to this connector; it must not refuse non-http schemes.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((**tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self { inner: HyperClient::builder(TokioExecutor::new()).build(connector) }
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let res = self.inner.request(req.body(Full::new(payload))?).await?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((status, value))
    }

    /// One action of the Cognito user-pool API (what the page calls for sign-up and sign-in).
    pub async fn cognito<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        action: &str,
        body: &T,
    ) -> Result<R, ClientError> {
        use firstcome_wire::site::cognito;
        let req = hyper::Request::post(endpoint)
            .header("content-type", cognito::CONTENT_TYPE)
            .header("x-amz-target", cognito::target(action))
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let res = self.inner.request(req).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        if status.is_success() {
            return Ok(serde_json::from_slice(&bytes)?);
        }
        Err(serde_json::from_slice(&bytes)
            .map(ClientError::Cognito)
            .unwrap_or(ClientError::CognitoStatus(status.as_u16())))
    }

    /// A GET whose answer is text (`/metrics`), not JSON.
    pub async fn get_text(&self, url: &str, token: Option<&str>) -> Result<(u16, String), ClientError> {
        let mut req = hyper::Request::get(url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = self.inner.request(req.body(Full::new(Bytes::new()))?).await?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    pub async fn get(&self, url: &str, token: Option<&str>) -> Result<(u16, Value), ClientError> {
        self.call(Method::GET, url, token, None).await
    }

    pub async fn post(
        &self,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        self.call(Method::POST, url, token, body).await
    }

    /// A claim carrying its ticket (`Firstcome-Ticket`).
    pub async fn claim_with_ticket(&self, url: &str, token: &str, ticket: u64) -> Result<(u16, Value), ClientError> {
        let req = hyper::Request::post(url)
            .header("authorization", format!("Bearer {token}"))
            .header(firstcome_ticket::HEADER, ticket)
            .body(Full::new(Bytes::new()))?;
        let res = self.inner.request(req).await?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((status, value))
    }
}
