//! API Gateway's JWT authorizer, as configured in template.yaml: RS256 tokens from the user pool
//! (`iss`), issued to the app client (`aud`), unexpired, signed by a key of the pool's JWKS. What
//! passes reaches the function as API Gateway forwards it: every claim flattened to a string.
//!
//! Beside the pool, this machine's HS256 dev tokens (`POST /api/dev/token`, the admin token file)
//! pass too, so `firstcome-rehearse` can mint users by the thousand as it does against local mode.
//! They can exist only here: the HS256 secret never leaves the emulator's data directory.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use firstcome_api::Auth;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

pub struct JwtAuthorizer {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    dev: Option<Arc<Auth>>,
}

impl JwtAuthorizer {
    /// `jwks`: the pool's `/.well-known/jwks.json` document.
    pub fn new(jwks: &Value, issuer: &str, audience: &[String]) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for key in jwks["keys"].as_array().context("a JWKS has a `keys` array")? {
            if key["kty"] != "RSA" {
                continue;
            }
            let (Some(kid), Some(n), Some(e)) = (key["kid"].as_str(), key["n"].as_str(), key["e"].as_str()) else {
                continue;
            };
            keys.insert(kid.to_owned(), DecodingKey::from_rsa_components(n, e).context("a JWKS RSA key")?);
        }
        anyhow::ensure!(!keys.is_empty(), "the JWKS has no RSA key");
        // RS256 only: a token naming another algorithm (none, HS256 keyed with the public key) fails.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Self { keys, validation, dev: None })
    }

    /// Also accept this machine's HS256 dev tokens (signed with `dev`'s secret).
    pub fn with_dev_tokens(self, dev: Arc<Auth>) -> Self {
        Self { dev: Some(dev), ..self }
    }

    /// The claims as the function sees them in `requestContext.authorizer.jwt.claims`, or `None`
    /// (API Gateway answers 401 itself).
    pub fn authorize(&self, token: &str) -> Option<Map<String, Value>> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg == Algorithm::HS256 {
            // A dev token, shaped like the pool's claims (the function reads `sub` and groups).
            let c = self.dev.as_ref()?.verify(token).ok()?;
            let mut claims = Map::new();
            claims.insert("sub".into(), json!(c.sub));
            claims.insert("token_use".into(), json!("id"));
            claims.insert("exp".into(), json!(c.exp.to_string()));
            if c.role.as_deref() == Some(firstcome_api::auth::ADMIN_ROLE) {
                claims.insert("cognito:groups".into(), json!("[admin]"));
            }
            return Some(claims);
        }
        let key = self.keys.get(header.kid.as_deref()?)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation).ok()?.claims;
        Some(claims.into_iter().map(|(k, v)| (k, Value::String(flatten(&v)))).collect())
    }
}

/// API Gateway's rendering of a claim: strings as they are, arrays as `[a b]`.
fn flatten(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(flatten).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_flattened_like_api_gateway_does() {
        assert_eq!(flatten(&serde_json::json!(["admin", "staff"])), "[admin staff]");
        assert_eq!(flatten(&serde_json::json!(1_700_000_000)), "1700000000");
        assert_eq!(flatten(&serde_json::json!("u-1")), "u-1");
    }

    #[test]
    fn a_jwks_without_rsa_keys_is_refused() {
        let none = serde_json::json!({ "keys": [{ "kty": "EC", "kid": "x" }] });
        assert!(JwtAuthorizer::new(&none, "iss", &["aud".into()]).is_err());
        assert!(JwtAuthorizer::new(&serde_json::json!({}), "iss", &["aud".into()]).is_err());
    }
}
