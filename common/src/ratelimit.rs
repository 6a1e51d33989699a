//! An async rate limiter (GCRA): at most `rate` requests per second on average, with a
//! burst of one second's worth. Shared per account, region and service by the collectors
//! that call it, at the strictest of their rates.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Who set a rate: the collector (or the library's own client) that shares the limiter.
pub(crate) type User = &'static str;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The rate each user of the limiter asked for; the strictest applies.
    rates: BTreeMap<User, f64>,
    /// The theoretical arrival time of the next request.
    tat: Option<Instant>,
}

/// A rate in requests per second, more than zero (1 when it is not).
fn sane(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    }
}

impl RateLimiter {
    /// A limiter with one user's `rate`, in requests per second.
    pub(crate) fn new(user: User, rate: f64) -> Self {
        RateLimiter {
            state: Mutex::new(State {
                rates: BTreeMap::from([(user, sane(rate))]),
                tat: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Sets `user`'s rate (a reloaded config may raise or lower it).
    pub(crate) fn set_rate(&self, user: User, rate: f64) {
        self.state().rates.insert(user, sane(rate));
    }

    /// Forgets `user`'s rate (its collector stopped), unless it is the last one.
    pub(crate) fn forget(&self, user: User) {
        let mut state = self.state();
        if state.rates.len() > 1 {
            state.rates.remove(user);
        }
    }

    /// Requests per second: the strictest of its users' rates.
    #[cfg(test)]
    pub(crate) fn rate(&self) -> f64 {
        strictest(&self.state().rates)
    }

    /// Waits until one more request may go out.
    pub(crate) async fn acquire(&self) {
        let wait_until = {
            let now = Instant::now();
            let mut state = self.state();
            let rate = strictest(&state.rates);
            let interval = Duration::from_secs_f64(1.0 / rate);
            // A burst of one second's worth.
            let burst = interval.mul_f64(rate.ceil().max(1.0) - 1.0);
            let t = state.tat.map_or(now, |t| t.max(now));
            state.tat = Some(t + interval);
            t.checked_sub(burst).unwrap_or(now).max(now)
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

fn strictest(rates: &BTreeMap<User, f64>) -> f64 {
    rates.values().copied().reduce(f64::min).unwrap_or(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_after_a_burst() {
        let limiter = RateLimiter::new("a", 4.0);
        let start = Instant::now();
        for _ in 0..4 {
            limiter.acquire().await;
        }
        // The burst of one second's worth goes out at once.
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..8 {
            limiter.acquire().await;
        }
        // Eight more need two more seconds at 4 per second.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_bank_more_than_the_burst() {
        let limiter = RateLimiter::new("a", 2.0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_strictest_user_sets_the_pace_until_it_is_forgotten() {
        let limiter = RateLimiter::new("fast", 10.0);
        limiter.set_rate("slow", 1.0);
        assert_eq!(limiter.rate(), 1.0);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A reload raises the slow one's rate; then it stops.
        limiter.set_rate("slow", 5.0);
        assert_eq!(limiter.rate(), 5.0);
        limiter.forget("slow");
        assert_eq!(limiter.rate(), 10.0);
        // The last user is never forgotten: the limiter keeps a rate.
        limiter.forget("fast");
        assert_eq!(limiter.rate(), 10.0);
    }
}
