//! An async rate limiter (GCRA): at most `rate` requests per second on average, with a
//! burst of one second's worth. Shared per account, region and service.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    interval: Duration,
    burst: Duration,
    /// The theoretical arrival time of the next request.
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `rate` is in requests per second and must be more than zero.
    pub(crate) fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let interval = Duration::from_secs_f64(1.0 / rate);
        let burst_count = rate.ceil().max(1.0);
        RateLimiter {
            rate,
            interval,
            burst: interval.mul_f64(burst_count - 1.0),
            tat: Mutex::new(None),
        }
    }

    /// Requests per second, as configured.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits until one more request may go out.
    pub(crate) async fn acquire(&self) {
        let wait_until = {
            let now = Instant::now();
            let mut tat = match self.tat.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let t = tat.map_or(now, |t| t.max(now));
            *tat = Some(t + self.interval);
            t.checked_sub(self.burst).unwrap_or(now).max(now)
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_after_a_burst() {
        let limiter = RateLimiter::new(4.0);
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
        let limiter = RateLimiter::new(2.0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
