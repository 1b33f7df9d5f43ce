//! Keeps each chat adapter running: an adapter whose `run` fails or panics is started again
//! after a wait that grows with consecutive short runs (a run that lasted counts as healthy and
//! resets the count), so a broken adapter neither leaves the bot deaf on its platform nor spins.
//! A `run` that returns `Ok` ended on purpose (shutdown, the console's input closed) and is not
//! restarted.

use crate::chat::{ChatAdapter, Inbound};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When to start a failed adapter again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restarts {
    /// The wait after the first failure; it doubles with each further one.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A run at least this long resets the count of failures.
    pub healthy_after: Duration,
}

/// The daemon's policy: 1 s doubling to 60 s; a run of 60 s counts as healthy.
pub const RESTARTS: Restarts = Restarts {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
    healthy_after: Duration::from_secs(60),
};

impl Restarts {
    /// The wait before the next start after `failures` consecutive failures (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// The count of consecutive failures after a run of `lasted` that failed, given `before`.
    pub fn count(&self, before: u32, lasted: Duration) -> u32 {
        if lasted >= self.healthy_after {
            1
        } else {
            before.saturating_add(1)
        }
    }
}

/// Runs `adapter` until `shutdown`, or until its `run` returns `Ok`, or until nobody listens to
/// `inbound` any more; restarts it after a failure or a panic as `restarts` says.
pub async fn supervise(
    adapter: Arc<dyn ChatAdapter>,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
    restarts: Restarts,
) {
    let platform = adapter.platform();
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let (a, tx, stop) = (adapter.clone(), inbound.clone(), shutdown.child_token());
        // Its own task, so that a panic ends this run and not the supervisor.
        let outcome = tokio::spawn(async move { a.run(tx, stop).await }).await;
        let reason = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) if e.is_panic() => "it panicked".to_string(),
            Err(e) => format!("its task ended: {e}"),
        };
        if shutdown.is_cancelled() {
            tracing::info!(platform = %platform, reason = %reason, "chat adapter stopped at shutdown");
            return;
        }
        if inbound.is_closed() {
            tracing::error!(platform = %platform, reason = %reason, "chat adapter stopped; nobody takes its messages");
            return;
        }
        failures = restarts.count(failures, started.elapsed());
        let wait = restarts.delay(failures);
        tracing::error!(platform = %platform, reason = %reason, failures, retry_in = ?wait,
            "chat adapter stopped; starting it again");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Delivered, DeliveryError, Outbound};
    use async_trait::async_trait;
    use baton_policies::Platform;
    use std::sync::Mutex;

    #[test]
    fn the_wait_doubles_to_its_cap_and_a_lasting_run_resets_the_count() {
        let r = Restarts {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
            healthy_after: Duration::from_secs(5),
        };
        let waits: Vec<u128> = (1..=6).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(r.count(0, Duration::from_millis(10)), 1);
        assert_eq!(r.count(4, Duration::from_millis(10)), 5);
        assert_eq!(
            r.count(4, Duration::from_secs(5)),
            1,
            "a healthy run starts the count again"
        );
    }

    /// What each call of `run` does, in order; after the script, `run` waits for shutdown.
    #[derive(Clone, Copy, Debug)]
    enum Then {
        Fail,
        Panic,
        /// Stays up this long, then fails.
        FailAfter(Duration),
        Finish,
    }

    struct Scripted {
        script: Mutex<Vec<Then>>,
        starts: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(script: &[Then]) -> Arc<Scripted> {
            Arc::new(Scripted {
                script: Mutex::new(script.iter().rev().copied().collect()),
                starts: Mutex::new(Vec::new()),
            })
        }

        fn starts(&self) -> Vec<Instant> {
            self.starts.lock().expect("no test panics while holding it").clone()
        }
    }

    #[async_trait]
    impl ChatAdapter for Scripted {
        fn platform(&self) -> Platform {
            Platform::Xmpp
        }

        async fn run(&self, _inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
            self.starts.lock().expect("not poisoned").push(Instant::now());
            let next = self.script.lock().expect("not poisoned").pop();
            match next {
                Some(Then::Fail) => anyhow::bail!("the stream ended"),
                Some(Then::Panic) => panic!("a bug in the adapter"),
                Some(Then::FailAfter(d)) => {
                    tokio::time::sleep(d).await;
                    anyhow::bail!("thrown out")
                }
                Some(Then::Finish) => Ok(()),
                None => {
                    shutdown.cancelled().await;
                    Ok(())
                }
            }
        }

        async fn deliver(&self, _message: &Outbound) -> Result<Delivered, DeliveryError> {
            Ok(Delivered::default())
        }
    }

    const QUICK: Restarts = Restarts {
        first: Duration::from_millis(100),
        max: Duration::from_millis(400),
        healthy_after: Duration::from_millis(300),
    };

    /// The gaps between consecutive starts.
    fn gaps(starts: &[Instant]) -> Vec<Duration> {
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_panicked_adapter_is_started_again_with_a_growing_wait() {
        let adapter = Scripted::new(&[Then::Fail, Then::Panic, Then::Fail, Then::Fail]);
        let (tx, _rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(supervise(adapter.clone(), tx, shutdown.clone(), QUICK));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let starts = adapter.starts();
        assert_eq!(starts.len(), 5, "four failures, then a run that stays up");
        let ms: Vec<u128> = gaps(&starts).iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 400]);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the supervisor ends at shutdown")
            .expect("and does not panic");
        assert_eq!(adapter.starts().len(), 5, "nothing is started after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_lasted_resets_the_wait() {
        let long = Duration::from_millis(500);
        let adapter = Scripted::new(&[Then::Fail, Then::Fail, Then::FailAfter(long), Then::Fail]);
        let (tx, _rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(supervise(adapter.clone(), tx, shutdown.clone(), QUICK));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ms: Vec<u128> = gaps(&adapter.starts()).iter().map(Duration::as_millis).collect();
        // 100, 200, then a 500 ms run and the first wait again (100), then 200 after a short one.
        assert_eq!(ms, [100, 200, 600, 200]);
        shutdown.cancel();
        task.await.expect("ends");
    }

    #[tokio::test(start_paused = true)]
    async fn an_adapter_that_finished_is_not_started_again() {
        let adapter = Scripted::new(&[Then::Finish]);
        let (tx, _rx) = mpsc::channel(1);
        let task = tokio::spawn(supervise(adapter.clone(), tx, CancellationToken::new(), QUICK));
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the supervisor ends with the adapter")
            .expect("and does not panic");
        assert_eq!(adapter.starts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_the_wait_ends_the_supervisor() {
        let adapter = Scripted::new(&[Then::Fail]);
        let (tx, _rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(supervise(adapter.clone(), tx, shutdown.clone(), RESTARTS));
        tokio::time::sleep(Duration::from_millis(10)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_millis(100), task)
            .await
            .expect("the supervisor ends at once")
            .expect("and does not panic");
        assert_eq!(adapter.starts().len(), 1);
    }
}
