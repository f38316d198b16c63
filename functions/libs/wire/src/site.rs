//! What the static page learns at start from `/config.json`, and the few Cognito user-pool calls
//! it makes itself (sign-up, confirmation, sign-in, refresh). The page is built once and deployed
//! anywhere: where it is and which identity provider it signs in with are files, not builds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /config.json`. Absent (local mode) means [`IdentityConfig::DevTokens`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteConfig {
    pub identity: IdentityConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IdentityConfig {
    /// `firstcome-local --dev-tokens`: any name, signed by the server through `/api/dev/token`.
    DevTokens,
    /// A Cognito user pool's public client: the page calls the user-pool API at `endpoint`
    /// (`https://cognito-idp.<region>.amazonaws.com/`) and sends the ID token to the API, whose
    /// JWT authorizer checks it against the pool (issuer) and this client (audience).
    Cognito { endpoint: String, client_id: String },
}

/// The Cognito user-pool API (`X-Amz-Target: AWSCognitoIdentityProviderService.<Action>`,
/// `Content-Type: application/x-amz-json-1.1`). Field names are Cognito's.
pub mod cognito {
    use super::*;

    pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

    /// The `X-Amz-Target` header of an action.
    pub fn target(action: &str) -> String {
        format!("AWSCognitoIdentityProviderService.{action}")
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct InitiateAuth {
        pub auth_flow: String,
        pub client_id: String,
        pub auth_parameters: BTreeMap<String, String>,
    }

    impl InitiateAuth {
        /// Email and password, sent over TLS to Cognito only, never to the API.
        pub fn password(client_id: &str, email: &str, password: &str) -> Self {
            Self {
                auth_flow: "USER_PASSWORD_AUTH".into(),
                client_id: client_id.into(),
                auth_parameters: BTreeMap::from([
                    ("USERNAME".into(), email.into()),
                    ("PASSWORD".into(), password.into()),
                ]),
            }
        }

        /// A new ID token from the refresh token (30 days by default), without the password.
        pub fn refresh(client_id: &str, refresh_token: &str) -> Self {
            Self {
                auth_flow: "REFRESH_TOKEN_AUTH".into(),
                client_id: client_id.into(),
                auth_parameters: BTreeMap::from([("REFRESH_TOKEN".into(), refresh_token.into())]),
            }
        }
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct InitiateAuthResponse {
        /// Absent when Cognito asks for a challenge (a new password, MFA) instead.
        pub authentication_result: Option<AuthenticationResult>,
        #[serde(default)]
        pub challenge_name: Option<String>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct AuthenticationResult {
        pub id_token: String,
        /// Only on a password sign-in; a refresh keeps the one it had.
        #[serde(default)]
        pub refresh_token: Option<String>,
        pub expires_in: u64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct SignUp {
        pub client_id: String,
        pub username: String,
        pub password: String,
        pub user_attributes: Vec<Attribute>,
    }

    impl SignUp {
        /// The pool's users sign in with their email (`UsernameAttributes: [email]`).
        pub fn email(client_id: &str, email: &str, password: &str) -> Self {
            Self {
                client_id: client_id.into(),
                username: email.into(),
                password: password.into(),
                user_attributes: vec![Attribute { name: "email".into(), value: email.into() }],
            }
        }
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Attribute {
        pub name: String,
        pub value: String,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct SignUpResponse {
        pub user_confirmed: bool,
    }

    /// The code Cognito emailed at sign-up.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ConfirmSignUp {
        pub client_id: String,
        pub username: String,
        pub confirmation_code: String,
    }

    /// Cognito's error body: `{"__type": "NotAuthorizedException", "message": "..."}`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Error {
        #[serde(rename = "__type")]
        pub kind: String,
        #[serde(default)]
        pub message: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_names_its_provider() {
        let c: SiteConfig = serde_json::from_str(
            r#"{"identity":{"kind":"cognito","endpoint":"https://cognito-idp.us-east-1.amazonaws.com/","client_id":"abc"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.identity,
            IdentityConfig::Cognito {
                endpoint: "https://cognito-idp.us-east-1.amazonaws.com/".into(),
                client_id: "abc".into()
            }
        );
        let dev = serde_json::to_string(&SiteConfig { identity: IdentityConfig::DevTokens }).unwrap();
        assert_eq!(dev, r#"{"identity":{"kind":"dev_tokens"}}"#);
        assert!(serde_json::from_str::<SiteConfig>(r#"{"identity":{"kind":"saml"}}"#).is_err());
    }

    #[test]
    fn cognito_bodies_use_cognitos_names() {
        let a = serde_json::to_value(cognito::InitiateAuth::password("c", "a@b.test", "pw")).unwrap();
        assert_eq!(
            a,
            serde_json::json!({"AuthFlow":"USER_PASSWORD_AUTH","ClientId":"c","AuthParameters":{"PASSWORD":"pw","USERNAME":"a@b.test"}})
        );
        let r: cognito::InitiateAuthResponse = serde_json::from_str(
            r#"{"AuthenticationResult":{"IdToken":"i","AccessToken":"a","ExpiresIn":3600,"TokenType":"Bearer"}}"#,
        )
        .unwrap();
        let auth = r.authentication_result.unwrap();
        assert_eq!((auth.id_token.as_str(), auth.refresh_token, auth.expires_in), ("i", None, 3600));
        let e: cognito::Error =
            serde_json::from_str(r#"{"__type":"UsernameExistsException","message":"User already exists"}"#).unwrap();
        assert_eq!(e.kind, "UsernameExistsException");
    }
}
