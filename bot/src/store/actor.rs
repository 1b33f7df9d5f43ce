//! The store on a thread of its own: the daemon's loop hands it work and takes the answers back
//! as inputs, so no commit (an fsync, or a round trip to a database server) ever holds the loop.
//! Jobs run in the order they were sent, so the journal's order is the loop's order.

use super::{Store, StoreError};
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// The handle to the store's thread. Cloning shares the thread; it ends when the last handle
/// is dropped, after the jobs already sent.
#[derive(Clone)]
pub struct StoreActor {
    jobs: mpsc::Sender<Job>,
    store_id: String,
}

/// Joins the store's thread (the daemon waits for its last jobs at exit).
pub struct StoreThread(Option<JoinHandle<()>>);

impl StoreThread {
    /// Waits for the thread, which ends once every handle is dropped.
    pub fn join(mut self) {
        if let Some(h) = self.0.take()
            && h.join().is_err()
        {
            tracing::error!("the store's thread panicked");
        }
    }
}

impl StoreActor {
    /// Moves `store` onto a new thread.
    pub fn spawn(store: Box<dyn Store>) -> std::io::Result<(StoreActor, StoreThread)> {
        let store_id = store.store_id().to_string();
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name("baton-store".into()).spawn(move || {
            let mut store = store;
            while let Ok(job) = rx.recv() {
                job(store.as_mut());
                // The job has answered: now what may follow its answer (the checkpoint).
                store.settle();
            }
        })?;
        Ok((StoreActor { jobs, store_id }, StoreThread(Some(thread))))
    }

    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Runs `f` on the store's thread without waiting for it. Returns false when the thread
    /// has stopped.
    pub fn send(&self, f: impl FnOnce(&mut dyn Store) + Send + 'static) -> bool {
        self.jobs.send(Box::new(f)).is_ok()
    }

    /// Runs `f` on the store's thread and waits for its answer.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(move |s| {
            let _ = tx.send(f(s));
        }) {
            return Err(StoreError::Stopped);
        }
        rx.await.unwrap_or(Err(StoreError::Stopped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, SqliteStore};

    #[tokio::test]
    async fn jobs_run_in_order_on_the_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("b.sqlite")).expect("opens");
        let (actor, thread) = StoreActor::spawn(Box::new(store)).expect("spawns");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..20 {
            let tx = tx.clone();
            actor.send(move |s| {
                s.commit(&Batch::default()).expect("commits");
                let _ = tx.send((n, std::thread::current().name().map(str::to_string)));
            });
        }
        for n in 0..20 {
            let (got, name) = rx.recv().await.expect("answered");
            assert_eq!(got, n, "in the order sent");
            assert_eq!(name.as_deref(), Some("baton-store"));
        }
        let len = actor.call(|s| s.outbox_len()).await.expect("answers");
        assert_eq!(len, 0);
        drop(actor);
        thread.join();
    }
}
