//! Basic authentication (`basic_auth_users` of `--web.config.file`), built so that
//! wrong passwords cannot stall the server or tell which users exist:
//!
//! - bcrypt runs on blocking threads, at most [`verifiers`] at a time: a flood of
//!   wrong passwords queues there, while probes and other requests are served by the
//!   async workers as usual.
//! - A successful verification is cached (at most [`CACHE_ENTRIES`]), keyed by the
//!   SHA-256 of user, password and stored hash, never the password itself: a scraper
//!   that sends the same credentials every scrape pays bcrypt once and never queues
//!   behind a flood.
//! - An unknown user is checked against a dummy hash of the configured cost, so it
//!   takes as long as a wrong password of a known one.
//! - Failed logins are logged at most once per [`LOG_INTERVAL`], with the number of
//!   failures since the last line. The password is never logged; the user name only
//!   when it is a configured one (an unknown "user name" may be a password typed into
//!   the wrong field, and is the attacker's text).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::webconfig::{basic_credentials, WebConfig};

/// Successful verifications remembered; the oldest is forgotten first.
pub(crate) const CACHE_ENTRIES: usize = 1024;
/// At most one log line about failed logins per interval.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// bcrypt verifications run at once: half the cores (at least one), so that a flood
/// of wrong passwords leaves CPU for the async workers.
fn verifiers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

#[derive(Debug)]
pub(crate) struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A hash of the highest configured cost, for unknown users.
    dummy: String,
    slots: Arc<Semaphore>,
    cache: Mutex<Cache>,
    failures: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Cache {
    keys: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

#[derive(Debug, Default)]
struct Failures {
    last_logged: Option<Instant>,
    suppressed: u64,
}

/// Why a request was refused, for the log.
#[derive(Debug, Clone, Copy)]
enum Failure<'a> {
    WrongPassword(&'a str),
    UnknownUser,
    Malformed,
}

impl BasicAuth {
    pub(crate) fn new(web: &WebConfig) -> Self {
        let users = web.basic_auth_users().clone();
        let cost = users.values().filter_map(|h| cost(h)).max();
        // Start-up only: one hash of the configured cost (70 ms at cost 10).
        let dummy = cost
            .and_then(|c| bcrypt::hash("headroom: no such user", c).ok())
            .unwrap_or_default();
        BasicAuth {
            users,
            dummy,
            slots: Arc::new(Semaphore::new(verifiers())),
            cache: Mutex::new(Cache::default()),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// Whether a request with this `Authorization` header may pass.
    pub(crate) async fn check(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(header) = header else {
            // A browser's first request: not a failed login.
            return false;
        };
        let Some((user, password)) = basic_credentials(Some(header)) else {
            self.failed(Failure::Malformed);
            return false;
        };
        let (known, hash) = match self.users.get_key_value(&user) {
            Some((name, hash)) => (Some(name.as_str()), hash.clone()),
            None => (None, self.dummy.clone()),
        };
        let key = cache_key(&user, &password, &hash);
        if known.is_some() && self.cached(&key) {
            return true;
        }
        let verified = self.verify(password, hash).await && known.is_some();
        match known {
            Some(_) if verified => {
                self.remember(key);
                true
            }
            Some(name) => {
                self.failed(Failure::WrongPassword(name));
                false
            }
            None => {
                self.failed(Failure::UnknownUser);
                false
            }
        }
    }

    /// bcrypt on a blocking thread, after waiting for a free verifier.
    async fn verify(&self, password: String, hash: String) -> bool {
        let Ok(_permit) = self.slots.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.keys.contains(key)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.keys.insert(key) {
            cache.order.push_back(key);
            while cache.order.len() > CACHE_ENTRIES {
                if let Some(old) = cache.order.pop_front() {
                    cache.keys.remove(&old);
                }
            }
        }
    }

    fn failed(&self, why: Failure<'_>) {
        let suppressed = {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if f.last_logged
                .is_some_and(|t| now.duration_since(t) < LOG_INTERVAL)
            {
                f.suppressed += 1;
                return;
            }
            f.last_logged = Some(now);
            std::mem::take(&mut f.suppressed)
        };
        match why {
            Failure::WrongPassword(user) => tracing::warn!(
                user,
                reason = "wrong password",
                suppressed,
                "basic authentication failed"
            ),
            Failure::UnknownUser => tracing::warn!(
                reason = "unknown user",
                suppressed,
                "basic authentication failed"
            ),
            Failure::Malformed => tracing::warn!(
                reason = "malformed Authorization header",
                suppressed,
                "basic authentication failed"
            ),
        }
    }
}

/// A bcrypt hash's cost: `$2y$10$...` is 10.
fn cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// SHA-256 of the three strings, each prefixed by its length so that no two triples
/// give the same input.
fn cache_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user, password, hash] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(users: &[(&str, &str)]) -> BasicAuth {
        let mut text = String::from("basic_auth_users:\n");
        for (user, password) in users {
            let hash = bcrypt::hash(password, 4).expect("hash");
            text.push_str(&format!("  {user}: '{hash}'\n"));
        }
        BasicAuth::new(&WebConfig::parse(&text, std::path::Path::new(".")).expect("web config"))
    }

    fn basic(user: &str, password: &str) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = format!("{user}:{password}").into_bytes();
        let mut out = String::from("Basic ");
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn verifies_caches_and_refuses() {
        let a = auth(&[("alice", "secret")]);
        assert_eq!(cost(&a.dummy), Some(4));
        assert!(a.check(Some(&basic("alice", "secret"))).await);
        assert_eq!(a.cache.lock().expect("cache").keys.len(), 1);
        assert!(a.check(Some(&basic("alice", "secret"))).await);
        assert!(!a.check(Some(&basic("alice", "wrong"))).await);
        assert!(!a.check(Some(&basic("bob", "secret"))).await);
        assert!(!a.check(None).await);
        assert!(!a.check(Some("Basic !!!")).await);
        // Only successes are cached, and not as the password.
        assert_eq!(a.cache.lock().expect("cache").keys.len(), 1);
        assert!(auth(&[]).check(None).await);
    }

    #[test]
    fn the_cache_is_bounded() {
        let a = auth(&[("alice", "secret")]);
        for i in 0..CACHE_ENTRIES + 10 {
            a.remember(cache_key("alice", &i.to_string(), "h"));
        }
        let cache = a.cache.lock().expect("cache");
        assert_eq!(cache.keys.len(), CACHE_ENTRIES);
        assert!(!cache.keys.contains(&cache_key("alice", "0", "h")));
    }

    #[test]
    fn cache_keys_do_not_collide_across_fields() {
        assert_ne!(cache_key("ab", "c", "h"), cache_key("a", "bc", "h"));
    }
}
