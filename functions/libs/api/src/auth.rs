//! Identity. Locally: bearer JWTs verified here with `jsonwebtoken` (`sub` is the user id; admins
//! carry `"role":"admin"`). Behind API Gateway: its JWT authorizer has verified the token, and the
//! Lambda glue hands the verified claims over as a [`GatewayIdentity`] request extension.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use firstcome_core::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
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
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
        validation: Validation,
    },
    /// Tokens were verified upstream; identity arrives as a `GatewayIdentity` extension.
    Gateway,
}

impl Auth {
    /// HS256 with a shared secret. `can_sign` is true only in local mode.
    pub fn hs256(secret: &[u8], can_sign: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        Self(Mode::Hs256 {
            decoding: DecodingKey::from_secret(secret),
            encoding: can_sign.then(|| EncodingKey::from_secret(secret)),
            validation,
        })
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
            Mode::Hs256 { decoding, validation, .. } => {
                Ok(jsonwebtoken::decode::<TokenClaims>(token, decoding, validation)?.claims)
            }
            Mode::Gateway => Err(jsonwebtoken::errors::ErrorKind::InvalidToken.into()),
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
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token has expired",
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "token signature is invalid",
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
