//! Who may use the page: users from `web.users` (argon2id hashes), server-side sessions with an
//! idle and an absolute expiry, one CSRF token per session, and the login limiter (after 5 failed
//! logins from one address within a minute, that address gets 429 for a minute).
//!
//! Owns: the session table, the failure table, password checks. Every table is bounded (oldest
//! entries go first). Time is passed in (`Instant`) so the rules are tested without sleeping.
//! Must not: log passwords, tokens or hashes, or keep anything on disk (a restart logs everyone out).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};

use crate::config::{Role, WebUser};

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, however active.
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; logging in beyond it ends the least recently used one.
pub const MAX_SESSIONS: usize = 64;
/// Failed logins from one address within [`FAILURE_WINDOW`] before it is blocked.
pub const MAX_FAILURES: usize = 5;
/// The window over which failures count, and how long a block lasts.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at most.
const MAX_TRACKED_ADDRESSES: usize = 4096;

/// A logged-in user's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf_token: String,
    created: Instant,
    last_used: Instant,
}

impl Session {
    /// When the session ends if unused from now on.
    pub fn expires_in(&self, now: Instant) -> Duration {
        let idle_end = self.last_used + SESSION_IDLE;
        let hard_end = self.created + SESSION_MAX;
        idle_end.min(hard_end).saturating_duration_since(now)
    }
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong user name or password (which one is not told).
    BadCredentials,
    /// Too many failures from this address; retry after this long.
    Blocked(Duration),
}

/// The sessions of a web server that stopped for an in-process restart of the core, with the
/// users they were opened for; the next server keeps those whose user is still configured the
/// same (name, role, password hash). Nothing is written to disk.
#[derive(Debug, Default)]
pub struct SessionCarry {
    kept: Mutex<Option<KeptSessions>>,
}

/// The users of the server that kept the sessions, and the sessions by token.
type KeptSessions = (Vec<WebUser>, HashMap<String, Session>);

/// Users, sessions and the login limiter.
pub struct Auth {
    users: Vec<WebUser>,
    /// A valid hash checked when the user name is unknown, so timing does not tell names apart.
    decoy_hash: String,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    by_address: HashMap<IpAddr, AddressFailures>,
    order: VecDeque<IpAddr>,
}

#[derive(Default)]
struct AddressFailures {
    times: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

/// A random token of 32 bytes in hex.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An argon2id PHC hash of `password` (what `roadedge passwd` prints).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

impl Auth {
    pub fn new(users: Vec<WebUser>) -> Auth {
        Auth {
            users,
            decoy_hash: hash_password("decoy").unwrap_or_default(),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// Hands this server's open sessions to the next one (see [`SessionCarry`]).
    pub fn keep_sessions(&self, carry: &SessionCarry) {
        let sessions = self.sessions.lock().map(|s| s.clone()).unwrap_or_default();
        if let Ok(mut k) = carry.kept.lock() {
            *k = Some((self.users.clone(), sessions));
        }
    }

    /// Takes over the sessions a previous server kept, for users configured the same now.
    pub fn adopt_sessions(&self, carry: &SessionCarry, now: Instant) {
        let Some((previous_users, sessions)) = carry.kept.lock().ok().and_then(|mut k| k.take()) else {
            return;
        };
        let unchanged = |name: &str| {
            let before = previous_users.iter().find(|u| u.name == name);
            let after = self.users.iter().find(|u| u.name == name);
            matches!((before, after), (Some(b), Some(a)) if b == a)
        };
        if let Ok(mut mine) = self.sessions.lock() {
            for (token, session) in sessions {
                if session.expires_in(now) > Duration::ZERO && unchanged(&session.user) && mine.len() < MAX_SESSIONS {
                    mine.insert(token, session);
                }
            }
        }
    }

    /// Whether any user can log in.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Refuses early when `addr` is blocked (no password check: a blocked client costs nothing).
    pub fn check_blocked(&self, addr: IpAddr, now: Instant) -> Result<(), LoginError> {
        let Ok(mut f) = self.failures.lock() else {
            return Ok(());
        };
        if let Some(entry) = f.by_address.get_mut(&addr) {
            if let Some(until) = entry.blocked_until {
                if now < until {
                    return Err(LoginError::Blocked(until - now));
                }
                entry.blocked_until = None;
                entry.times.clear();
            }
        }
        Ok(())
    }

    /// Checks a user name and password (slow: argon2; call off the async threads). On success
    /// returns the user; on failure counts it against `addr`.
    pub fn verify(&self, addr: IpAddr, username: &str, password: &str, now: Instant) -> Result<WebUser, LoginError> {
        self.check_blocked(addr, now)?;
        let user = self.users.iter().find(|u| u.name == username);
        let hash = user.map_or(self.decoy_hash.as_str(), |u| u.password_hash.as_str());
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        match user {
            Some(u) if ok => {
                if let Ok(mut f) = self.failures.lock() {
                    f.by_address.remove(&addr);
                }
                Ok(u.clone())
            }
            _ => Err(self.count_failure(addr, now)),
        }
    }

    fn count_failure(&self, addr: IpAddr, now: Instant) -> LoginError {
        let Ok(mut f) = self.failures.lock() else {
            return LoginError::BadCredentials;
        };
        if !f.by_address.contains_key(&addr) {
            if f.by_address.len() >= MAX_TRACKED_ADDRESSES {
                if let Some(oldest) = f.order.pop_front() {
                    f.by_address.remove(&oldest);
                }
            }
            f.order.push_back(addr);
        }
        let entry = f.by_address.entry(addr).or_default();
        while entry
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW)
        {
            entry.times.pop_front();
        }
        entry.times.push_back(now);
        if entry.times.len() >= MAX_FAILURES {
            entry.blocked_until = Some(now + FAILURE_WINDOW);
        }
        LoginError::BadCredentials
    }

    /// Opens a session for `user`; returns (session token, CSRF token).
    pub fn open_session(&self, user: &WebUser, now: Instant) -> (String, String) {
        let token = random_token();
        let csrf = random_token();
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, v| v.expires_in(now) > Duration::ZERO);
            if s.len() >= MAX_SESSIONS {
                let oldest = s.iter().min_by_key(|(_, v)| v.last_used).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    s.remove(&k);
                }
            }
            s.insert(
                token.clone(),
                Session {
                    user: user.name.clone(),
                    role: user.role,
                    csrf_token: csrf.clone(),
                    created: now,
                    last_used: now,
                },
            );
        }
        (token, csrf)
    }

    /// The live session of `token`, marked used now; `None` when unknown or expired.
    pub fn session(&self, token: &str, now: Instant) -> Option<Session> {
        let mut sessions = self.sessions.lock().ok()?;
        let live = sessions.get(token).is_some_and(|s| s.expires_in(now) > Duration::ZERO);
        if !live {
            sessions.remove(token);
            return None;
        }
        let s = sessions.get_mut(token)?;
        s.last_used = now;
        Some(s.clone())
    }

    /// Whether `token` names a live session, without marking it used (event streams).
    pub fn is_live(&self, token: &str, now: Instant) -> bool {
        self.sessions
            .lock()
            .map(|s| s.get(token).is_some_and(|s| s.expires_in(now) > Duration::ZERO))
            .unwrap_or(false)
    }

    /// Ends a session.
    pub fn close_session(&self, token: &str) -> bool {
        self.sessions
            .lock()
            .map(|mut s| s.remove(token).is_some())
            .unwrap_or(false)
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            WebUser {
                name: "admin".into(),
                password_hash: hash_password("s3cret").unwrap(),
                role: Role::Admin,
            },
            WebUser {
                name: "view".into(),
                password_hash: hash_password("look").unwrap(),
                role: Role::Viewer,
            },
        ])
    }

    const ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 8));

    #[test]
    fn right_passwords_log_in_and_wrong_ones_or_unknown_users_do_not() {
        let a = auth();
        let now = Instant::now();
        assert_eq!(a.verify(ADDR, "admin", "s3cret", now).unwrap().role, Role::Admin);
        assert_eq!(a.verify(ADDR, "view", "look", now).unwrap().role, Role::Viewer);
        assert_eq!(
            a.verify(ADDR, "admin", "S3cret", now).err(),
            Some(LoginError::BadCredentials)
        );
        assert_eq!(
            a.verify(ADDR, "nobody", "s3cret", now).err(),
            Some(LoginError::BadCredentials)
        );
    }

    #[test]
    fn five_failures_within_a_minute_block_the_address_for_a_minute_and_only_that_address() {
        let a = auth();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(
                a.verify(ADDR, "admin", "wrong", t0 + Duration::from_secs(i as u64))
                    .err(),
                Some(LoginError::BadCredentials)
            );
        }
        let t5 = t0 + Duration::from_secs(10);
        assert!(matches!(
            a.verify(ADDR, "admin", "s3cret", t5),
            Err(LoginError::Blocked(_))
        ));
        assert!(a.verify(OTHER, "admin", "s3cret", t5).is_ok());
        let after = t0 + Duration::from_secs(4) + FAILURE_WINDOW;
        assert!(a.verify(ADDR, "admin", "s3cret", after).is_ok());
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_do_not_block() {
        let a = auth();
        let t0 = Instant::now();
        for i in 0..8u64 {
            let _ = a.verify(ADDR, "admin", "wrong", t0 + Duration::from_secs(i * 20));
        }
        assert!(a.verify(ADDR, "admin", "s3cret", t0 + Duration::from_secs(161)).is_ok());
    }

    #[test]
    fn sessions_expire_when_idle_or_too_old_and_end_at_logout() {
        let a = auth();
        let user = a.verify(ADDR, "admin", "s3cret", Instant::now()).unwrap();
        let t0 = Instant::now();
        let (token, csrf) = a.open_session(&user, t0);
        assert_eq!(a.session(&token, t0).unwrap().csrf_token, csrf);
        assert!(a.session(&token, t0 + SESSION_IDLE + Duration::from_secs(1)).is_none());
        let (token, _) = a.open_session(&user, t0);
        let mut t = t0;
        while t < t0 + SESSION_MAX - SESSION_IDLE {
            t += SESSION_IDLE / 2;
            assert!(a.session(&token, t).is_some());
        }
        assert!(a.session(&token, t0 + SESSION_MAX).is_none());
        let (token, _) = a.open_session(&user, t0);
        assert!(a.close_session(&token));
        assert!(a.session(&token, t0).is_none());
    }

    #[test]
    fn the_session_table_is_bounded() {
        let a = auth();
        let user = a.verify(ADDR, "admin", "s3cret", Instant::now()).unwrap();
        let t0 = Instant::now();
        let (first, _) = a.open_session(&user, t0);
        for i in 0..MAX_SESSIONS {
            a.open_session(&user, t0 + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(a.session_count(), MAX_SESSIONS);
        assert!(a.session(&first, t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
