//! What a collector reads from AWS once and keeps between refreshes, per target.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::error::CollectError;
use super::target::Target;

/// One target's value: when it was read, and what it is; locked while it is read.
type Slot<T> = Arc<tokio::sync::Mutex<Option<(Instant, Arc<T>)>>>;

/// A value per target (account and region) that a collector reads from AWS and keeps
/// between refreshes (a listing several collectors count from, say). It is read again
/// once older than the age the caller allows; while one refresh reads it, the others
/// that need it wait for that read, so collectors that start together read it once. A
/// failed read keeps nothing, and the next caller reads again.
pub struct PerTarget<T> {
    by_target: Mutex<HashMap<(String, String), Slot<T>>>,
}

impl<T> Default for PerTarget<T> {
    fn default() -> Self {
        PerTarget {
            by_target: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> fmt::Debug for PerTarget<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerTarget").finish_non_exhaustive()
    }
}

impl<T> PerTarget<T> {
    /// The target's value if it is younger than `max_age`; else what `read` gives,
    /// kept for the next callers.
    pub async fn get<F, Fut>(
        &self,
        target: &Target,
        max_age: Duration,
        read: F,
    ) -> Result<Arc<T>, CollectError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, CollectError>>,
    {
        let slot = {
            let mut map = match self.by_target.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            map.entry((target.account_id.clone(), target.region.clone()))
                .or_default()
                .clone()
        };
        let mut held = slot.lock().await;
        if let Some((at, value)) = held.as_ref() {
            if at.elapsed() < max_age {
                return Ok(value.clone());
            }
        }
        let value = Arc::new(read().await?);
        *held = Some((Instant::now(), value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::api::{ClientParts, ClientSource};

    #[derive(Debug)]
    struct NoClients;

    impl ClientSource for NoClients {
        fn parts(&self, service_code: &'static str, _region: &str) -> ClientParts {
            unreachable!("no client of {service_code} is built here")
        }
    }

    fn target(region: &str) -> Target {
        Target::new("111111111111", region, Arc::new(NoClients))
    }

    #[tokio::test(start_paused = true)]
    async fn read_once_per_age_and_target_with_waiters_sharing_the_read() {
        let kept: PerTarget<usize> = PerTarget::default();
        let reads = AtomicUsize::new(0);
        let read = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(reads.fetch_add(1, Ordering::SeqCst))
        };
        let age = Duration::from_secs(60);
        let (a, b) = (target("eu-west-1"), target("eu-west-1"));
        // Two callers at once: one reads, the other waits for it.
        let (x, y) = tokio::join!(kept.get(&a, age, read), kept.get(&b, age, read));
        assert_eq!((*x.unwrap(), *y.unwrap()), (0, 0));
        // Another region is another value.
        assert_eq!(*kept.get(&target("us-east-1"), age, read).await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(*kept.get(&a, age, read).await.unwrap(), 0, "still young");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(*kept.get(&a, age, read).await.unwrap(), 2, "read again");
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_keeps_nothing() {
        let kept: PerTarget<u32> = PerTarget::default();
        let t = target("eu-west-1");
        let age = Duration::from_secs(60);
        let e = kept
            .get(&t, age, || async {
                Err(CollectError::malformed("Op", "bad"))
            })
            .await
            .expect_err("failed");
        assert_eq!(e.code, "malformed_response");
        assert_eq!(*kept.get(&t, age, || async { Ok(7) }).await.unwrap(), 7);
    }
}
