//! Session and agent tokens: HS256 JWTs under the installation secret, with scopes and
//! optional `project` / `issue_id` / `agent_type` bindings that the sidecar's routes enforce.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::secret::{SECRET_LEN, Secret};

pub const ISSUER: &str = "cco";
pub const AUDIENCE: &str = "cco-sidecar";
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// What a token may do. Serialized as a space-separated `scope` claim (OAuth style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    ContextRead,
    ResultsRead,
    ResultsWrite,
    EventsPublish,
    EventsWait,
    AgentsRead,
    AgentsWrite,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::ContextRead,
        Scope::ResultsRead,
        Scope::ResultsWrite,
        Scope::EventsPublish,
        Scope::EventsWait,
        Scope::AgentsRead,
        Scope::AgentsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ContextRead => "context:read",
            Scope::ResultsRead => "results:read",
            Scope::ResultsWrite => "results:write",
            Scope::EventsPublish => "events:publish",
            Scope::EventsWait => "events:wait",
            Scope::AgentsRead => "agents:read",
            Scope::AgentsWrite => "agents:write",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
}

impl Claims {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scope
            .split_ascii_whitespace()
            .any(|s| s == scope.as_str())
    }

    /// `Ok` when the token is not bound to another issue / agent type than the request's.
    pub fn check_binding(
        &self,
        issue_id: Option<&str>,
        agent_type: Option<&str>,
    ) -> Result<(), AuthError> {
        for (what, bound, asked) in [
            ("issue", self.issue_id.as_deref(), issue_id),
            ("agent type", self.agent_type.as_deref(), agent_type),
        ] {
            if let (Some(bound), Some(asked)) = (bound, asked)
                && bound != asked
            {
                return Err(AuthError::OutOfScope(format!(
                    "token is bound to {what} {bound:?}, not {asked:?}"
                )));
            }
        }
        Ok(())
    }
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub sub: String,
    pub ttl: Duration,
    pub scopes: Vec<Scope>,
    pub project: Option<String>,
    pub issue_id: Option<String>,
    pub agent_type: Option<String>,
}

impl TokenSpec {
    /// A full-scope token for one Claude Code session.
    pub fn session(sub: impl Into<String>, ttl: Duration) -> TokenSpec {
        TokenSpec {
            sub: sub.into(),
            ttl,
            scopes: Scope::ALL.to_vec(),
            project: None,
            issue_id: None,
            agent_type: None,
        }
    }
}

/// A signed token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "missing bearer token: send `Authorization: Bearer <token>` (mint one with `cco token`)"
    )]
    Missing,
    #[error("invalid token ({0}): mint one with `cco token`")]
    Invalid(String),
    #[error("token has expired — mint a new one with `cco token`")]
    Expired,
    #[error("token lacks scope {0}")]
    MissingScope(Scope),
    #[error("out of scope: {0}")]
    OutOfScope(String),
    #[error("secret is shorter than {SECRET_LEN} bytes")]
    WeakSecret,
}

/// Signing and verification keys plus the validation rules, built once per process.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Keys {
    pub fn new(secret: &Secret) -> Result<Keys, AuthError> {
        if secret.bytes().len() < SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        // Only HS256 is accepted: `alg: none`, HS512 and asymmetric algorithms are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret.bytes()),
            decoding: DecodingKey::from_secret(secret.bytes()),
            validation,
        })
    }

    pub fn mint(&self, spec: &TokenSpec) -> Token {
        let iat = now_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: spec.sub.clone(),
            iat,
            exp: iat + spec.ttl.as_secs().max(1),
            scope: spec
                .scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            project: spec.project.clone(),
            issue_id: spec.issue_id.clone(),
            agent_type: spec.agent_type.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail");
        Token(token)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid(
                        "token not valid yet (nbf is in the future); check the clock and mint a new one with `cco token`"
                            .into(),
                    )
                }
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm must be HS256".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim {c}"))
                }
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        // A token from the future was minted under a wrong clock or forged to outlive its ttl.
        if claims.iat > now_secs() + LEEWAY_SECS {
            return Err(AuthError::Invalid(
                "token issued in the future (iat); check the clock and mint a new one with `cco token`"
                    .into(),
            ));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> Keys {
        Keys::new(&Secret::from_bytes(vec![3; 32])).unwrap()
    }

    fn forge(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
        use base64_like::b64;
        let h = b64(header.to_string().as_bytes());
        let c = b64(claims.to_string().as_bytes());
        let signing = format!("{h}.{c}");
        let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).unwrap();
        hmac::Mac::update(&mut m, signing.as_bytes());
        let sig = b64(&hmac::Mac::finalize(m).into_bytes());
        format!("{signing}.{sig}")
    }

    /// Minimal base64url (no padding) for forging test tokens by hand.
    mod base64_like {
        pub fn b64(data: &[u8]) -> String {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
                for i in 0..=chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }

    fn good_claims() -> serde_json::Value {
        json!({"iss":"cco","aud":"cco-sidecar","sub":"t","iat":now_secs(),"exp":now_secs()+60,"scope":"events:wait"})
    }

    #[test]
    fn round_trip_and_scopes() {
        let k = keys();
        let mut spec = TokenSpec::session("s1", Duration::from_secs(60));
        spec.issue_id = Some("issue-1".into());
        let claims = k.verify(&k.mint(&spec).0).unwrap();
        assert!(Scope::ALL.iter().all(|s| claims.has_scope(*s)));
        assert!(claims.check_binding(Some("issue-1"), Some("any")).is_ok());
        assert!(matches!(
            claims.check_binding(Some("issue-2"), None),
            Err(AuthError::OutOfScope(_))
        ));
        // Our hand-forged tokens are accepted when they are right, so the refusals below mean something.
        assert!(
            k.verify(&forge(
                json!({"alg":"HS256","typ":"JWT"}),
                good_claims(),
                &[3; 32]
            ))
            .is_ok()
        );
    }

    /// `nbf` and `iat` in the future are refused beyond the leeway, accepted within it.
    #[test]
    fn future_nbf_and_iat_are_refused_beyond_the_leeway() {
        let k = keys();
        let hs256 = json!({"alg":"HS256","typ":"JWT"});
        let with = |claim: &str, at: u64| {
            let mut c = good_claims();
            c[claim] = json!(at);
            c["exp"] = json!(now_secs() + 3600);
            forge(hs256.clone(), c, &[3; 32])
        };
        let far = now_secs() + LEEWAY_SECS + 60;
        let near = now_secs() + 1;
        for claim in ["nbf", "iat"] {
            let err = k.verify(&with(claim, far)).unwrap_err();
            assert!(
                matches!(&err, AuthError::Invalid(m) if m.contains(claim) && m.contains("cco token")),
                "{claim}: {err}"
            );
            assert!(
                k.verify(&with(claim, near)).is_ok(),
                "{claim} within the leeway"
            );
        }
        assert!(k.verify(&with("nbf", now_secs() - 60)).is_ok());
    }

    #[test]
    fn bad_tokens_refused() {
        let k = keys();
        let hs256 = json!({"alg":"HS256","typ":"JWT"});
        let cases = [
            (
                "wrong secret",
                forge(hs256.clone(), good_claims(), &[4; 32]),
            ),
            (
                "alg none",
                forge(json!({"alg":"none"}), good_claims(), &[3; 32]),
            ),
            (
                "hs512",
                forge(json!({"alg":"HS512"}), good_claims(), &[3; 32]),
            ),
            ("expired", {
                let mut c = good_claims();
                c["exp"] = json!(now_secs() - 60);
                forge(hs256.clone(), c, &[3; 32])
            }),
            ("string exp", {
                let mut c = good_claims();
                c["exp"] = json!((now_secs() + 60).to_string());
                forge(hs256.clone(), c, &[3; 32])
            }),
            ("wrong aud", {
                let mut c = good_claims();
                c["aud"] = json!("other");
                forge(hs256.clone(), c, &[3; 32])
            }),
            ("no sub", {
                let mut c = good_claims();
                c.as_object_mut().unwrap().remove("sub");
                forge(hs256.clone(), c, &[3; 32])
            }),
            ("garbage", "not.a.token".to_string()),
        ];
        for (what, token) in cases {
            assert!(k.verify(&token).is_err(), "{what} was accepted");
        }
        assert_eq!(
            Keys::new(&Secret::from_bytes(vec![1; 16])).unwrap_err(),
            AuthError::WeakSecret
        );
    }
}
