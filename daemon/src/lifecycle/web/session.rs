//! Who may use the web page. There are no passwords: `filesyncctl web` asks the daemon
//! over its private control socket for a one-time login token ([`Sessions::login_url`]),
//! so only the daemon's own user (and root) can get one. Visiting the URL trades the
//! token, once and within [`LOGIN_VALID`], for a session cookie (HttpOnly,
//! SameSite=Strict). Every data URL needs that cookie; every request that changes
//! something also needs to come from the page itself ([`same_origin`]).
//!
//! Tokens and sessions are 256-bit random values held in memory only: a restart logs
//! every browser out, and `filesyncctl web` logs one in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{COOKIE, HOST, ORIGIN};

/// How long a login URL works, unless used before.
pub const LOGIN_VALID: Duration = Duration::from_secs(5 * 60);
/// How long a session lasts from its login.
pub const SESSION_VALID: Duration = Duration::from_secs(7 * 24 * 3600);
/// Login tokens waiting to be used, and sessions, kept at most: the oldest goes first.
const MAX_PENDING: usize = 8;
const MAX_SESSIONS: usize = 32;
/// The session cookie's name.
pub const COOKIE_NAME: &str = "filesync_session";

/// The web page's login tokens and sessions.
pub struct Sessions {
    /// `http://ADDR` or `https://ADDR`: where the page is served.
    base: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Unused login tokens and when each was made.
    logins: HashMap<String, Instant>,
    /// Sessions and when each was made.
    sessions: HashMap<String, Instant>,
}

impl Sessions {
    pub fn new(base: String) -> Sessions {
        Sessions {
            base,
            state: Mutex::new(State::default()),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.base.starts_with("https:")
    }

    /// A new one-time login URL.
    pub fn login_url(&self) -> String {
        let token = random_token();
        let mut state = self.lock();
        insert_bounded(&mut state.logins, token.clone(), MAX_PENDING, LOGIN_VALID);
        format!("{}/login?token={token}", self.base)
    }

    /// Trades a login token for a new session, once; `None` for a token that is
    /// unknown, used or expired.
    pub fn redeem(&self, token: &str) -> Option<String> {
        let mut state = self.lock();
        let made = state.logins.remove(token)?;
        if made.elapsed() > LOGIN_VALID {
            return None;
        }
        let session = random_token();
        insert_bounded(
            &mut state.sessions,
            session.clone(),
            MAX_SESSIONS,
            SESSION_VALID,
        );
        Some(session)
    }

    /// Whether the request's cookie holds a live session.
    pub fn is_logged_in(&self, headers: &HeaderMap) -> bool {
        let Some(session) = session_cookie(headers) else {
            return false;
        };
        let mut state = self.lock();
        match state.sessions.get(session) {
            Some(made) if made.elapsed() <= SESSION_VALID => true,
            Some(_) => {
                state.sessions.remove(session);
                false
            }
            None => false,
        }
    }

    /// The `Set-Cookie` value that holds `session`.
    pub fn cookie(&self, session: &str) -> String {
        let secure = if self.is_tls() { "; Secure" } else { "" };
        format!(
            "{COOKIE_NAME}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            SESSION_VALID.as_secs()
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `key`, first dropping what is older than `valid` and then the oldest entries
/// past `max`.
fn insert_bounded(map: &mut HashMap<String, Instant>, key: String, max: usize, valid: Duration) {
    map.retain(|_, made| made.elapsed() <= valid);
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, made)| **made)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
    map.insert(key, Instant::now());
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The value of the session cookie, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME).then_some(value)
        })
}

/// Whether a state-changing request comes from the page itself: a browser's
/// `Sec-Fetch-Site` must say `same-origin`; without it, `Origin` must name the host the
/// request was sent to. A request with neither is refused, so a form or script on
/// another site cannot act with the user's cookie.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(axum::http::HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    match (text(ORIGIN), text(HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_login_url_works_once_and_gives_a_session() {
        let sessions = Sessions::new("http://127.0.0.1:7102".into());
        let url = sessions.login_url();
        let token = url
            .strip_prefix("http://127.0.0.1:7102/login?token=")
            .unwrap();
        let session = sessions.redeem(token).expect("first use");
        assert!(sessions.redeem(token).is_none(), "second use");
        let cookie = format!("other=1; {COOKIE_NAME}={session}");
        assert!(sessions.is_logged_in(&headers(&[("cookie", &cookie)])));
        assert!(!sessions.is_logged_in(&headers(&[("cookie", "filesync_session=x")])));
        assert!(!sessions.is_logged_in(&HeaderMap::new()));
        assert!(
            sessions
                .cookie(&session)
                .contains("HttpOnly; SameSite=Strict")
        );
    }

    #[test]
    fn pending_logins_are_bounded() {
        let sessions = Sessions::new("http://h".into());
        let first = sessions.login_url();
        for _ in 0..MAX_PENDING {
            sessions.login_url();
        }
        let token = first.rsplit('=').next().unwrap();
        assert!(sessions.redeem(token).is_none(), "the oldest was dropped");
    }

    #[test]
    fn only_same_origin_requests_may_change_things() {
        let host = ("host", "127.0.0.1:7102");
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:7102")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host])));
    }
}
