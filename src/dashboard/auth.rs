//! Dashboard login without the bearer token in the browser: `cco dashboard` gets a one-time
//! code (single use, [`CODE_TTL`]) that `/login` exchanges for an HttpOnly, SameSite=Strict
//! session cookie; sessions live in memory only, bounded in count and time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

/// How long a login code may wait to be used.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a dashboard session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most unused codes kept; the oldest is dropped for a new one.
pub const MAX_CODES: usize = 32;
/// Most live sessions kept; the oldest is dropped for a new one.
pub const MAX_SESSIONS: usize = 64;
/// Random bytes in a code and in a session id (256 bits).
const SECRET_BYTES: usize = 32;
/// The session cookie's name.
pub const COOKIE: &str = "cco_dashboard";

/// Codes and sessions, keyed by the SHA-256 of the secret so the table never holds (or
/// compares) the secret itself.
#[derive(Debug, Default)]
pub struct Sessions {
    codes: Mutex<HashMap<[u8; 32], Instant>>,
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
}

fn key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret, hex-encoded.
fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Drops expired entries, then the ones expiring first until there is room for one more.
fn make_room(table: &mut HashMap<[u8; 32], Instant>, now: Instant, cap: usize) {
    table.retain(|_, expires| *expires > now);
    while table.len() >= cap {
        let Some(oldest) = table.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) else {
            break;
        };
        table.remove(&oldest);
    }
}

impl Sessions {
    /// A new login code, valid once until `now + CODE_TTL`.
    pub fn issue_code(&self, now: Instant) -> String {
        let code = random_secret();
        let mut codes = self.codes.lock().expect("codes lock");
        make_room(&mut codes, now, MAX_CODES);
        codes.insert(key(&code), now + CODE_TTL);
        code
    }

    /// Spends `code` (whatever the outcome, it cannot be used again) and opens a session;
    /// `None` when the code is unknown, used or expired.
    pub fn redeem(&self, code: &str, now: Instant) -> Option<String> {
        let expires = self.codes.lock().expect("codes lock").remove(&key(code))?;
        if expires <= now {
            return None;
        }
        let id = random_secret();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        make_room(&mut sessions, now, MAX_SESSIONS);
        sessions.insert(key(&id), now + SESSION_TTL);
        Some(id)
    }

    /// Whether `id` names a live session.
    pub fn check(&self, id: &str, now: Instant) -> bool {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(&key(id)) {
            Some(expires) if *expires > now => true,
            Some(_) => {
                sessions.remove(&key(id));
                false
            }
            None => false,
        }
    }

    /// Ends the session `id` (logout).
    pub fn end(&self, id: &str) {
        self.sessions
            .lock()
            .expect("sessions lock")
            .remove(&key(id));
    }
}

/// The value of our session cookie among the request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session: not readable by scripts, never sent cross-site.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_code_works_once() {
        let s = Sessions::default();
        let now = Instant::now();
        let code = s.issue_code(now);
        assert_eq!(code.len(), SECRET_BYTES * 2, "256 random bits, hex");
        let id = s.redeem(&code, now).expect("a fresh code logs in");
        assert!(s.check(&id, now));
        assert_eq!(s.redeem(&code, now), None, "second use refused");
        assert_eq!(s.redeem("not-a-code", now), None);
    }

    #[test]
    fn a_code_expires_after_its_ttl_and_is_spent_by_the_try() {
        let s = Sessions::default();
        let now = Instant::now();
        let code = s.issue_code(now);
        assert_eq!(s.redeem(&code, now + CODE_TTL), None);
        let code = s.issue_code(now);
        assert!(
            s.redeem(&code, now + CODE_TTL - Duration::from_secs(1))
                .is_some()
        );
    }

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::default();
        let now = Instant::now();
        let id = s.redeem(&s.issue_code(now), now).unwrap();
        assert!(s.check(&id, now + SESSION_TTL - Duration::from_secs(1)));
        assert!(!s.check(&id, now + SESSION_TTL));
        assert!(!s.check(&id, now), "an expired session is forgotten");
        let id = s.redeem(&s.issue_code(now), now).unwrap();
        s.end(&id);
        assert!(!s.check(&id, now));
        assert!(!s.check("", now));
    }

    #[test]
    fn the_tables_are_bounded() {
        let s = Sessions::default();
        let now = Instant::now();
        let first = s.issue_code(now);
        for i in 0..MAX_CODES {
            s.issue_code(now + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(s.codes.lock().unwrap().len(), MAX_CODES);
        assert_eq!(s.redeem(&first, now), None, "the oldest code made room");
        let first = s.redeem(&s.issue_code(now), now).unwrap();
        for i in 0..MAX_SESSIONS {
            let t = now + Duration::from_millis(i as u64 + 1);
            s.redeem(&s.issue_code(t), t).unwrap();
        }
        assert_eq!(s.sessions.lock().unwrap().len(), MAX_SESSIONS);
        assert!(!s.check(&first, now), "the oldest session made room");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(session_cookie(&h), None);
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(session_cookie(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=y;cco_dashboard=abc ; z=1"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("cco_dashboard="));
        assert_eq!(session_cookie(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xcco_dashboard=abc"),
        );
        assert_eq!(session_cookie(&h), None, "names match whole");
    }

    #[test]
    fn the_cookie_is_httponly_and_strict() {
        let c = set_cookie("abc");
        for part in ["cco_dashboard=abc", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
