//! Identity. Locally: bearer HS256 JWTs, verified here and signed with `jsonwebtoken` (`sub` is
//! the user id; admins carry `"role":"admin"`). Behind API Gateway: its JWT authorizer has verified
//! the token, and the Lambda glue hands the verified claims over as a [`GatewayIdentity`] request
//! extension.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use firstcome_core::UserId;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::{ApiError, Shared};

pub const ADMIN_ROLE: &str = "admin";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Who API Gateway's JWT authorizer let through: the token's `sub`, and whether its groups
/// include `admin`. Only the Lambda glue inserts it, from the request context of a route the
/// authorizer guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity {
    pub sub: String,
    pub admin: bool,
}

/// Verifies tokens; in local mode it can also sign them (dev tokens, the admin token).
pub struct Auth(Mode);

// One per process, behind an Arc: the size difference costs nothing.
#[expect(clippy::large_enum_variant)]
enum Mode {
    Hs256 {
        verifier: Hs256,
        encoding: Option<EncodingKey>,
    },
    /// Tokens were verified upstream; identity arrives as a `GatewayIdentity` extension.
    Gateway,
}

impl Auth {
    /// HS256 with a shared secret that this process also signs with: local mode, whose dev
    /// tokens it issues itself.
    pub fn hs256_signing(secret: &[u8]) -> Self {
        Self(Mode::Hs256 { verifier: Hs256::new(secret), encoding: Some(EncodingKey::from_secret(secret)) })
    }

    /// HS256 that only verifies: tokens come from elsewhere, and `POST /api/dev/token` refuses.
    pub fn hs256_verifying(secret: &[u8]) -> Self {
        Self(Mode::Hs256 { verifier: Hs256::new(secret), encoding: None })
    }

    /// Behind API Gateway's JWT authorizer: a request without a `GatewayIdentity` is anonymous.
    pub fn gateway() -> Self {
        Self(Mode::Gateway)
    }

    pub fn can_sign(&self) -> bool {
        matches!(&self.0, Mode::Hs256 { encoding: Some(_), .. })
    }

    pub fn verify(&self, token: &str) -> Result<TokenClaims, jsonwebtoken::errors::Error> {
        match &self.0 {
            Mode::Hs256 { verifier, .. } => verifier.verify(token, OffsetDateTime::now_utc().unix_timestamp()),
            Mode::Gateway => Err(ErrorKind::InvalidToken.into()),
        }
    }

    /// Signs a token, or `None` where this deployment does not sign (Lambda).
    pub fn sign(&self, sub: &str, role: Option<&str>, ttl: time::Duration) -> Option<String> {
        match &self.0 {
            Mode::Hs256 { encoding: Some(key), .. } => Some(sign_with(key, sub, role, ttl)),
            _ => None,
        }
    }
}

/// Seconds a token may be past its `exp` and still pass: clocks of the signer and this server
/// may differ by that much.
const LEEWAY_SECS: i64 = 30;

/// HS256 verification on the request path, where every claim pays for it. `jsonwebtoken::decode`
/// (used before) parses the header and the claims twice each and keys a new HMAC per call; with it
/// a sold-out claim answered at 0.76-0.82 x the `/healthz` ceiling even with everything after the
/// token check skipped, and at 0.97-0.99 with the token check skipped too (bench `spike`, AMD
/// EPYC). Signing stays with `jsonwebtoken`.
///
/// What it accepts is what `jsonwebtoken` with `Validation::new(HS256)` and a 30 s leeway did:
/// `header.payload.signature` in unpadded base64url, a header whose `alg` is `HS256` (the only
/// algorithm; no `none`, no choice by the token), a signature that is this key's HMAC-SHA256 of
/// `header.payload` (compared in constant time, before any JSON is read), and claims with a
/// numeric `exp` not more than the leeway in the past.
struct Hs256 {
    /// Keyed once; each check clones the keyed state instead of hashing the key again.
    mac: Hmac<Sha256>,
}

impl Hs256 {
    fn new(secret: &[u8]) -> Self {
        Self { mac: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length") }
    }

    fn verify(&self, token: &str, now: i64) -> Result<TokenClaims, jsonwebtoken::errors::Error> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            alg: std::borrow::Cow<'a, str>,
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(ErrorKind::InvalidToken)?;
        let (header, payload) = signed.split_once('.').ok_or(ErrorKind::InvalidToken)?;
        // An HMAC-SHA256 is 32 bytes: 43 characters unpadded. Decoding into a larger buffer lets
        // a longer one fail below as a wrong signature rather than an error of the buffer.
        let mut mac = [0u8; 48];
        let len = URL_SAFE_NO_PAD.decode_slice(signature, &mut mac).map_err(|_| ErrorKind::InvalidSignature)?;
        let mut check = self.mac.clone();
        check.update(signed.as_bytes());
        check.verify_slice(&mac[..len]).map_err(|_| ErrorKind::InvalidSignature)?;
        // Only what this key signed is parsed from here on.
        let head = URL_SAFE_NO_PAD.decode(header)?;
        if serde_json::from_slice::<Head>(&head)?.alg != "HS256" {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        let claims: TokenClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
        if claims.exp < now - LEEWAY_SECS {
            return Err(ErrorKind::ExpiredSignature.into());
        }
        Ok(claims)
    }
}

/// Signs an HS256 token with `secret`: for tools (the load rehearsal, tests) that hold the local secret.
pub fn sign_hs256(secret: &[u8], sub: &str, role: Option<&str>, ttl: time::Duration) -> String {
    sign_with(&EncodingKey::from_secret(secret), sub, role, ttl)
}

fn sign_with(key: &EncodingKey, sub: &str, role: Option<&str>, ttl: time::Duration) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims =
        TokenClaims { sub: sub.to_owned(), role: role.map(str::to_owned), iat: now, exp: now + ttl.whole_seconds() };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
        .expect("HS256 signing of plain claims cannot fail")
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value =
        parts.headers.get(AUTHORIZATION).ok_or(ApiError::unauthorized("missing Authorization: Bearer token"))?;
    let value = value.to_str().map_err(|_| ApiError::unauthorized("Authorization header is not ASCII"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::unauthorized("Authorization must be 'Bearer <token>'"))
}

fn claims(parts: &Parts, state: &Shared) -> Result<TokenClaims, ApiError> {
    if let Mode::Gateway = state.auth.0 {
        let id = parts
            .extensions
            .get::<GatewayIdentity>()
            .ok_or(ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let role = id.admin.then(|| ADMIN_ROLE.to_owned());
        return Ok(TokenClaims { sub: id.sub.clone(), role, iat: 0, exp: 0 });
    }
    state.auth.verify(bearer(parts)?).map_err(|e| {
        let reason = match e.kind() {
            ErrorKind::ExpiredSignature => "token has expired",
            ErrorKind::InvalidSignature => "token signature is invalid",
            _ => "token is malformed or invalid",
        };
        ApiError::Unauthorized { reason, source: Some(e) }
    })
}

/// A signed-in customer: any valid token except an admin's. Admins are not claimants: an admin
/// token claiming would use up stock meant for customers.
pub struct User(pub UserId);

impl FromRequestParts<Shared> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let c = claims(parts, state)?;
        if c.role.as_deref() == Some(ADMIN_ROLE) {
            return Err(ApiError::Forbidden("admin tokens cannot claim coupons; sign in as a customer"));
        }
        UserId::parse(&c.sub).map(User).map_err(|_| ApiError::unauthorized("token subject is not a valid user id"))
    }
}

/// A signed-in admin (`"role":"admin"`); other valid tokens get 403.
pub struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        match claims(parts, state)?.role.as_deref() {
            Some(ADMIN_ROLE) => Ok(Admin),
            _ => Err(ApiError::Forbidden("this needs an admin token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a secret of the local deployment";

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    /// A token with this header and claims, signed with `key` (HS256 whatever the header says).
    fn forge(header: &str, claims: &str, key: &[u8]) -> String {
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn kind(token: &str) -> ErrorKind {
        Hs256::new(SECRET).verify(token, now()).unwrap_err().into_kind()
    }

    #[test]
    fn accepts_what_jsonwebtoken_signs() {
        let token = sign_hs256(SECRET, "alice", None, time::Duration::minutes(5));
        let claims = Hs256::new(SECRET).verify(&token, now()).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("alice", None));
        let admin = sign_hs256(SECRET, "ops", Some(ADMIN_ROLE), time::Duration::minutes(5));
        assert_eq!(Hs256::new(SECRET).verify(&admin, now()).unwrap().role.as_deref(), Some(ADMIN_ROLE));
    }

    #[test]
    fn refuses_another_key_and_any_changed_byte() {
        let token = sign_hs256(b"someone else's secret", "alice", None, time::Duration::minutes(5));
        assert!(matches!(kind(&token), ErrorKind::InvalidSignature));
        let token = sign_hs256(SECRET, "alice", None, time::Duration::minutes(5));
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let (header, _) = signed.split_once('.').unwrap();
        let admin = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"alice","role":"admin","iat":0,"exp":{}}}"#, now() + 60));
        assert!(matches!(kind(&format!("{header}.{admin}.{sig}")), ErrorKind::InvalidSignature), "claims swapped");
        assert!(matches!(kind(&format!("{signed}.{}", &sig[1..])), ErrorKind::InvalidSignature), "signature cut");
        assert!(matches!(kind(&format!("{signed}.{sig}AAAA")), ErrorKind::InvalidSignature), "signature grown");
        assert!(matches!(kind(&format!("{signed}.")), ErrorKind::InvalidSignature), "no signature");
        assert!(matches!(kind(&format!("{signed}.{sig}=")), ErrorKind::InvalidSignature), "padded");
    }

    #[test]
    fn refuses_other_algorithms_even_when_the_mac_is_right() {
        let claims = format!(r#"{{"sub":"alice","iat":0,"exp":{}}}"#, now() + 60);
        for alg in ["none", "HS512", "RS256", "hs256"] {
            let token = forge(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &claims, SECRET);
            assert!(matches!(kind(&token), ErrorKind::InvalidAlgorithm), "{alg}");
        }
        assert!(matches!(kind(&forge(r#"{"typ":"JWT"}"#, &claims, SECRET)), ErrorKind::Json(_)), "no alg");
        let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(&claims));
        assert!(matches!(kind(&unsigned), ErrorKind::InvalidSignature));
        let escaped = forge(r#"{"alg":"HS\u0032\u0035\u0036"}"#, &claims, SECRET);
        assert!(Hs256::new(SECRET).verify(&escaped, now()).is_ok(), "an escaped alg is still HS256");
    }

    #[test]
    fn expiry_has_thirty_seconds_of_leeway_and_claims_are_required() {
        let at = |exp: i64| forge(r#"{"alg":"HS256"}"#, &format!(r#"{{"sub":"a","iat":0,"exp":{exp}}}"#), SECRET);
        let now = now();
        assert!(Hs256::new(SECRET).verify(&at(now - 30), now).is_ok());
        let late = Hs256::new(SECRET).verify(&at(now - 31), now).unwrap_err();
        assert!(matches!(late.into_kind(), ErrorKind::ExpiredSignature));
        for claims in
            [r#"{"sub":"a","iat":0}"#, r#"{"iat":0,"exp":9999999999}"#, r#"{"sub":"a","iat":0,"exp":"soon"}"#, "[]"]
        {
            assert!(matches!(kind(&forge(r#"{"alg":"HS256"}"#, claims, SECRET)), ErrorKind::Json(_)), "{claims}");
        }
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        for token in ["", ".", "..", "a.b", "a.b.c.d", "ü.ü.ü", "eyJ.eyJ.", "....................."] {
            assert!(Hs256::new(SECRET).verify(token, now()).is_err(), "{token:?}");
        }
    }
}
