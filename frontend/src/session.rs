//! Who is signed in, and with which identity provider. The page learns the provider from
//! `/config.json` (written beside the page at deploy; absent in local mode, which means dev tokens):
//! local mode signs in by name through `/api/dev/token`; the AWS deployment signs in against the
//! Cognito user pool's public client and sends the ID token, which API Gateway's JWT authorizer
//! checks. Sessions live in `sessionStorage`: gone when the tab closes, never shared between tabs.

use std::cell::RefCell;

use firstcome_wire::site::{IdentityConfig, SiteConfig, cognito};
use firstcome_wire::{DevTokenRequest, DevTokenResponse};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::{Call, Failure, from_json, sleep, to_json};

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// What the customer typed (a name, or an email): shown, never sent as identity.
    pub user: String,
    pub token: String,
    /// Cognito only: gets a new ID token without the password.
    pub refresh: Option<String>,
}

thread_local! {
    static IDENTITY: RefCell<Option<IdentityConfig>> = const { RefCell::new(None) };
}

/// The provider this deployment signs in with, fetched once per page load. A 404 means local
/// mode; a failure is retried for a while (a network blip must not turn a Cognito page into a dev
/// one) before the page falls back to dev tokens, whose sign-in then explains itself.
pub async fn identity() -> IdentityConfig {
    if let Some(known) = IDENTITY.with(|i| i.borrow().clone()) {
        return known;
    }
    let mut wait = 250.0;
    let mut found = IdentityConfig::DevTokens;
    for _ in 0..8 {
        match Call::get("/config.json").fresh().json::<SiteConfig>().await {
            Ok(a) => {
                found = a.value.identity;
                break;
            }
            Err(f) if f.status() == Some(404) => break,
            Err(_) => {
                sleep(wait).await;
                wait = (wait * 2.0).min(5000.0);
            }
        }
    }
    IDENTITY.with(|i| *i.borrow_mut() = Some(found.clone()));
    found
}

/// Local mode (`firstcome-local --dev-tokens`): any name, signed by the server for this machine.
pub async fn dev_sign_in(name: &str) -> Result<Session, Failure> {
    let body = to_json(&DevTokenRequest { user_id: name.trim().to_owned() });
    let answer = Call { body: Some(body), ..Call::post("/api/dev/token") }.json::<DevTokenResponse>().await?;
    Ok(Session { user: name.trim().to_owned(), token: answer.value.token, refresh: None })
}

/// One call of the Cognito user-pool API (CORS-enabled, unauthenticated for these actions).
async fn cognito_call<T: DeserializeOwned>(endpoint: &str, action: &str, body: String) -> Result<T, Failure> {
    let headers = [("Content-Type", cognito::CONTENT_TYPE.to_owned()), ("X-Amz-Target", cognito::target(action))];
    let res = crate::api::fetch(crate::api::Method::Post, endpoint, &headers, Some(&body), false).await?;
    let status = res.status();
    let text = crate::api::body_text(&res).await?;
    if (200..300).contains(&status) {
        return from_json(&text).ok_or_else(|| Failure::Network("unreadable answer from the user pool".into()));
    }
    Err(match from_json::<cognito::Error>(&text) {
        Some(e) => Failure::Identity { status, kind: e.kind, message: e.message },
        None => Failure::Http { status, retry_after: None },
    })
}

fn session_from(
    email: &str,
    answer: cognito::InitiateAuthResponse,
    refresh: Option<String>,
) -> Result<Session, Failure> {
    match answer.authentication_result {
        Some(r) => Ok(Session { user: email.to_owned(), token: r.id_token, refresh: r.refresh_token.or(refresh) }),
        None => Err(Failure::Identity {
            status: 200,
            kind: answer.challenge_name.unwrap_or_default(),
            message: "the user pool asks for a step this page does not offer".into(),
        }),
    }
}

/// Email and password, sent to the user pool only (never to the API).
pub async fn cognito_sign_in(endpoint: &str, client_id: &str, email: &str, password: &str) -> Result<Session, Failure> {
    let body = to_json(&cognito::InitiateAuth::password(client_id, email.trim(), password));
    session_from(email.trim(), cognito_call(endpoint, "InitiateAuth", body).await?, None)
}

/// A new account. `Ok(true)`: usable at once; `Ok(false)`: the emailed code must be confirmed.
pub async fn cognito_sign_up(endpoint: &str, client_id: &str, email: &str, password: &str) -> Result<bool, Failure> {
    let body = to_json(&cognito::SignUp::email(client_id, email.trim(), password));
    Ok(cognito_call::<cognito::SignUpResponse>(endpoint, "SignUp", body).await?.user_confirmed)
}

pub async fn cognito_confirm(endpoint: &str, client_id: &str, email: &str, code: &str) -> Result<(), Failure> {
    let body = to_json(&cognito::ConfirmSignUp {
        client_id: client_id.to_owned(),
        username: email.trim().to_owned(),
        confirmation_code: code.trim().to_owned(),
    });
    cognito_call::<serde::de::IgnoredAny>(endpoint, "ConfirmSignUp", body).await.map(|_| ())
}

/// The token's payload as JSON text, read (not verified: the API does that).
fn payload(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let mut b64: String = payload
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    web_sys::window()?.atob(&b64).ok()
}

/// Seconds since the epoch at which the token expires.
fn expires_at(token: &str) -> Option<f64> {
    #[derive(Deserialize)]
    struct Exp {
        exp: f64,
    }
    from_json::<Exp>(&payload(token)?).map(|e| e.exp)
}

/// The user id the API knows this token by (its `sub`): what a claim ticket is bound to.
pub fn subject(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    from_json::<Sub>(&payload(token)?).map(|s| s.sub)
}

/// The session with a token good for at least two more minutes: a customer who signed in an hour
/// before T0 must not meet a 401 at T0. Dev tokens and sessions without a refresh token are
/// returned as they are (the API's 401 then asks for a new sign-in).
pub async fn fresh(s: Session) -> Session {
    let Some(refresh) = s.refresh.clone() else { return s };
    let soon = js_sys::Date::now() / 1000.0 + 120.0;
    if expires_at(&s.token).is_none_or(|exp| exp > soon) {
        return s;
    }
    let IdentityConfig::Cognito { endpoint, client_id } = identity().await else { return s };
    let body = to_json(&cognito::InitiateAuth::refresh(&client_id, &refresh));
    match cognito_call(&endpoint, "InitiateAuth", body).await.and_then(|a| session_from(&s.user, a, Some(refresh))) {
        Ok(new) => {
            save(Some(&new));
            new
        }
        Err(_) => s,
    }
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

const USER_KEY: &str = "firstcome.user";
const ADMIN_KEY: &str = "firstcome.admin";

pub fn load() -> Option<Session> {
    let s = storage()?;
    let raw = s.get_item(USER_KEY).ok()??;
    let mut lines = raw.split('\n');
    let (user, token) = (lines.next()?, lines.next()?);
    let refresh = lines.next().filter(|r| !r.is_empty()).map(str::to_owned);
    Some(Session { user: user.to_owned(), token: token.to_owned(), refresh })
}

pub fn save(session: Option<&Session>) {
    if let Some(s) = storage() {
        let _ = match session {
            Some(x) => {
                s.set_item(USER_KEY, &format!("{}\n{}\n{}", x.user, x.token, x.refresh.as_deref().unwrap_or("")))
            }
            None => s.remove_item(USER_KEY),
        };
    }
}

pub fn load_admin() -> Option<String> {
    storage()?.get_item(ADMIN_KEY).ok()?
}

pub fn save_admin(token: Option<&str>) {
    if let Some(s) = storage() {
        let _ = match token {
            Some(t) => s.set_item(ADMIN_KEY, t),
            None => s.remove_item(ADMIN_KEY),
        };
    }
}
