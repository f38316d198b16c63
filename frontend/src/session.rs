//! Who is signed in. Sign-in sits behind `IdentityProvider` so the AWS deployment can plug in
//! its identity provider (Cognito) later; local mode signs in by name through `/api/dev/token`.
//! The token lives in `sessionStorage`: gone when the tab closes, never shared between tabs.

use firstcome_wire::{DevTokenRequest, DevTokenResponse};

use crate::api::{Call, Failure, to_json};

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: String,
    pub token: String,
}

/// Turns what the customer typed into a session. Browser futures are single-threaded, so no
/// `Send` bound is wanted here.
#[allow(async_fn_in_trait)]
pub trait IdentityProvider {
    async fn sign_in(&self, name: &str) -> Result<Session, Failure>;
}

/// Local mode (`firstcome-local --dev-tokens`): any name, signed by the server for this machine.
pub struct DevTokens;

impl IdentityProvider for DevTokens {
    async fn sign_in(&self, name: &str) -> Result<Session, Failure> {
        let body = to_json(&DevTokenRequest { user_id: name.trim().to_owned() });
        let answer = Call { body: Some(body), ..Call::post("/api/dev/token") }.json::<DevTokenResponse>().await?;
        Ok(Session { user: name.trim().to_owned(), token: answer.value.token })
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
    let (user, token) = raw.split_once('\n')?;
    Some(Session { user: user.to_owned(), token: token.to_owned() })
}

pub fn save(session: Option<&Session>) {
    if let Some(s) = storage() {
        let _ = match session {
            Some(x) => s.set_item(USER_KEY, &format!("{}\n{}", x.user, x.token)),
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
