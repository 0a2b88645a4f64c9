//! Bearer-token authentication: verifies a JWT with a pinned algorithm, turns its `sub`
//! into a [`UserId`], and (in just-in-time mode) makes sure the user exists in the
//! directory, remembering who was provisioned so that this is not a write per request.
//!
//! Tokens are never logged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use chat_domain::{DisplayName, UserId};
use chat_ports::UserDirectory;
use chat_service::ServiceError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// Tolerated clock skew when checking `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// How many provisioned users are remembered before the memory is cleared.
const PROVISIONED_CACHE_LIMIT: usize = 100_000;

/// Who owns the user records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provisioning {
    /// A verified token upserts its user (with the `name` claim) just in time.
    #[default]
    Jit,
    /// The platform owns the users (`app_users`); tokens never write.
    External,
}

impl Provisioning {
    /// Parses `jit` or `external`.
    ///
    /// # Errors
    /// [`AuthConfigError::Provisioning`] for anything else.
    pub fn parse(text: &str) -> Result<Self, AuthConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "jit" => Ok(Provisioning::Jit),
            "external" => Ok(Provisioning::External),
            other => Err(AuthConfigError::Provisioning(other.to_owned())),
        }
    }
}

/// Why an authentication setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The algorithm is not supported.
    #[error(
        "unsupported JWT algorithm `{0}` (use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)"
    )]
    Algorithm(String),
    /// The public key could not be read.
    #[error("invalid public key for {algorithm:?}: {reason}")]
    Key {
        /// The algorithm the key was meant for.
        algorithm: Algorithm,
        /// Why it was refused.
        reason: String,
    },
    /// An HMAC algorithm was configured without a secret, or a public-key one without a
    /// key.
    #[error("{0}")]
    Missing(&'static str),
    /// The provisioning mode is unknown.
    #[error("unknown user provisioning `{0}` (use jit or external)")]
    Provisioning(String),
}

/// How tokens are verified.
#[derive(Clone)]
pub struct AuthConfig {
    algorithm: Algorithm,
    key: DecodingKey,
    /// The required `iss`, when configured.
    pub issuer: Option<String>,
    /// The required `aud`, when configured.
    pub audience: Option<String>,
    /// Who owns user records.
    pub provisioning: Provisioning,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is deliberately left out.
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("provisioning", &self.provisioning)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
            issuer: None,
            audience: None,
            provisioning: Provisioning::Jit,
        }
    }

    /// An asymmetric algorithm (RS*, PS*, ES*, EdDSA) with a PEM public key.
    ///
    /// # Errors
    /// [`AuthConfigError`] for an HMAC algorithm or a key that does not parse.
    pub fn public_key(algorithm: Algorithm, pem: &[u8]) -> Result<Self, AuthConfigError> {
        use Algorithm::*;
        let key = match algorithm {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
            ES256 | ES384 => DecodingKey::from_ec_pem(pem),
            EdDSA => DecodingKey::from_ed_pem(pem),
            HS256 | HS384 | HS512 => {
                return Err(AuthConfigError::Missing(
                    "HMAC algorithms take CHAT_JWT_SECRET, not a public key",
                ));
            }
        }
        .map_err(|err| AuthConfigError::Key {
            algorithm,
            reason: err.to_string(),
        })?;
        Ok(Self {
            algorithm,
            key,
            issuer: None,
            audience: None,
            provisioning: Provisioning::Jit,
        })
    }

    /// An HMAC algorithm other than HS256 with a shared secret.
    ///
    /// # Errors
    /// [`AuthConfigError`] when `algorithm` is not an HMAC algorithm.
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Self, AuthConfigError> {
        if !matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(AuthConfigError::Missing(
                "public-key algorithms need CHAT_JWT_PUBLIC_KEY_PEM",
            ));
        }
        Ok(Self {
            algorithm,
            ..Self::hs256(secret)
        })
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn validation(&self) -> Validation {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// Parses an algorithm name as `CHAT_JWT_ALGORITHM` spells it.
///
/// # Errors
/// [`AuthConfigError::Algorithm`] for an unknown name.
pub fn parse_algorithm(text: &str) -> Result<Algorithm, AuthConfigError> {
    text.trim()
        .parse::<Algorithm>()
        .map_err(|_| AuthConfigError::Algorithm(text.to_owned()))
}

/// The latest `exp` accepted, in seconds since the epoch: the end of year 9999. Every
/// platform's `SystemTime` and `Instant` hold it, so the WebSocket expiry timer computed
/// from it cannot overflow (an `exp` of 2^63 or more used to panic there).
pub const MAX_EXP_SECONDS: u64 = 253_402_300_799;

/// The claims this service reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Already checked by `jsonwebtoken` against the clock; read again to bound it.
    exp: f64,
    #[serde(default)]
    name: Option<String>,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user (`sub`).
    pub user_id: UserId,
    /// The display name (`name`), when the token carries a valid one.
    pub name: Option<DisplayName>,
}

/// Verifies tokens and provisions users.
pub struct Authenticator {
    config: AuthConfig,
    validation: Validation,
    users: Arc<dyn UserDirectory>,
    provisioned: Mutex<HashMap<UserId, Option<DisplayName>>>,
    provisioned_limit: usize,
}

impl Authenticator {
    /// An authenticator with `config`, provisioning into `users` in JIT mode.
    pub fn new(config: AuthConfig, users: Arc<dyn UserDirectory>) -> Self {
        Self {
            validation: config.validation(),
            config,
            users,
            provisioned: Mutex::new(HashMap::new()),
            provisioned_limit: PROVISIONED_CACHE_LIMIT,
        }
    }

    /// Verifies a token (without the `Bearer ` prefix).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for any token that is not valid.
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.config.key, &self.validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidIssuer => "the token has the wrong issuer",
                    ErrorKind::InvalidAudience => "the token has the wrong audience",
                    ErrorKind::InvalidSignature => "the token signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the token uses the wrong algorithm",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is malformed",
                };
                tracing::debug!(reason = why, "token refused");
                ApiError::Unauthorized(why)
            })?;
        // Compared as f64: an integer `exp` near u64::MAX rounds up, never below the bound.
        if data.claims.exp.is_nan() || data.claims.exp > MAX_EXP_SECONDS as f64 {
            tracing::debug!(reason = "exp too far", "token refused");
            return Err(ApiError::Unauthorized(
                "the token expires too far in the future",
            ));
        }
        let user_id = UserId::parse(&data.claims.sub)
            .map_err(|_| ApiError::Unauthorized("the token subject is not a user id"))?;
        let name = data
            .claims
            .name
            .as_deref()
            .and_then(|n| DisplayName::parse(n).ok());
        Ok(Identity { user_id, name })
    }

    /// Verifies the `Authorization` header and provisions the user in JIT mode.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] without a valid bearer token; `unavailable` when the
    /// directory cannot be reached for provisioning.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, ApiError> {
        let header = authorization.ok_or(ApiError::Unauthorized("a bearer token is required"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let identity = self.verify(token)?;
        if self.config.provisioning == Provisioning::Jit {
            self.provision(&identity).await?;
        }
        Ok(identity)
    }

    async fn provision(&self, identity: &Identity) -> Result<(), ApiError> {
        let known = self
            .provisioned
            .lock()
            .map(|seen| seen.get(&identity.user_id) == Some(&identity.name))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        self.users
            .upsert_user(identity.user_id, identity.name.clone())
            .await
            .map_err(ServiceError::from)?;
        if let Ok(mut seen) = self.provisioned.lock() {
            if seen.len() >= self.provisioned_limit {
                seen.clear();
            }
            seen.insert(identity.user_id, identity.name.clone());
        }
        Ok(())
    }
}

/// The authenticated caller of a handler: extracting it answers 401 without a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Box::pin(async move {
            let state = state.ok_or(ApiError::Unauthorized("authentication is not configured"))?;
            let identity = state.auth.authenticate(authorization.as_deref()).await?;
            Ok(AuthUser(identity.user_id))
        })
    }
}

/// The claims of a token minted by [`mint_hs256`].
#[derive(Debug, Clone, Serialize)]
pub struct MintClaims {
    /// The user id, in decimal.
    pub sub: String,
    /// The display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// The issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl MintClaims {
    /// Claims for `user`, valid from now for `ttl_seconds`.
    pub fn new(user: UserId, name: Option<String>, ttl_seconds: u64) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            sub: user.to_string(),
            name,
            iat: now,
            exp: now.saturating_add(ttl_seconds),
            iss: None,
            aud: None,
        }
    }
}

/// Mints an HS256 token (for development, scripts and tests).
///
/// # Errors
/// A `jsonwebtoken` error when encoding fails.
pub fn mint_hs256(
    secret: &[u8],
    claims: &MintClaims,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod provisioned_cache_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use chat_ports::StoreError;

    use super::*;

    /// Counts upserts; knows nobody.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl UserDirectory for Counting {
        async fn missing_users(&self, users: &[UserId]) -> Result<Vec<UserId>, StoreError> {
            Ok(users.to_vec())
        }
        async fn display_names(
            &self,
            _users: &[UserId],
        ) -> Result<HashMap<UserId, String>, StoreError> {
            Ok(HashMap::new())
        }
        async fn upsert_user(
            &self,
            _user: UserId,
            _name: Option<DisplayName>,
        ) -> Result<(), StoreError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_provisioned_users_cache_never_passes_its_bound() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let users = Arc::new(Counting::default());
        let mut auth = Authenticator::new(AuthConfig::hs256(secret), users.clone());
        auth.provisioned_limit = 3;
        let bearer = |id: i64| {
            let claims = MintClaims::new(UserId::new(id).unwrap(), None, 600);
            format!("Bearer {}", mint_hs256(secret, &claims).unwrap())
        };
        for id in 1..=10 {
            auth.authenticate(Some(&bearer(id))).await.unwrap();
            assert!(auth.provisioned.lock().unwrap().len() <= 3);
        }
        assert_eq!(users.0.load(Ordering::SeqCst), 10);
        // A remembered user is not upserted again.
        auth.authenticate(Some(&bearer(10))).await.unwrap();
        assert_eq!(users.0.load(Ordering::SeqCst), 10);
    }
}
