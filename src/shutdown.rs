//! Shutdown: the one stop signal, and the owner of every task.
//!
//! `main` makes one [`Shutdown`] and hands a clone to each part it starts. A part spawns its
//! long-lived tasks with [`Shutdown::spawn`], which names and tracks them, and each task
//! returns once [`Shutdown::cancelled`] fires (usually one arm of its `select!`). When the
//! streamer presses Ctrl-C or the service manager sends SIGTERM ([`signal`]), `main` calls
//! [`Shutdown::finish`]: the token is cancelled, and the call returns when every tracked task
//! has ended, or names the ones that have not after a grace period.
//!
//! No task dies silently: one that panics, or ends on its own before shutdown was asked for,
//! is logged with its name.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::util::lock::Locked;

/// The stop signal and the tasks that watch it. Cheap to clone; every clone is the same.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
    /// Names of the tasks still running, to say which ones hold shutdown up.
    running: Arc<Running>,
}

#[derive(Default)]
struct Running {
    next: AtomicU64,
    names: Mutex<BTreeMap<u64, &'static str>>,
}

/// Takes a task's name off the list when the task ends, however it ends.
struct Registered {
    running: Arc<Running>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.running.names.locked().remove(&self.id);
    }
}

impl Shutdown {
    /// A signal nobody has given yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token itself, for code that takes a [`CancellationToken`].
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Resolves once shutdown has begun.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Whether shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// A signal for one part that can also be stopped on its own (e.g. the Twitch link when
    /// its handle is dropped): cancelled with this one, or by itself; its tasks are still
    /// ones [`Shutdown::finish`] waits for.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tasks: self.tasks.clone(),
            running: self.running.clone(),
        }
    }

    /// Spawns `task` on the current tokio runtime as one of the tasks shutdown waits for.
    /// `task` must return soon after [`Shutdown::cancelled`] fires. The handle is for callers
    /// that want to know when it ended; dropping it changes nothing.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_boxed(name, Box::pin(task))
    }

    /// [`Shutdown::spawn`]'s body, for one future type: the watching wrapper and tokio's task
    /// machinery are compiled once, not once per kind of task.
    fn spawn_boxed(
        &self,
        name: &'static str,
        task: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> tokio::task::JoinHandle<()> {
        let id = self.running.next.fetch_add(1, Ordering::Relaxed);
        self.running.names.locked().insert(id, name);
        let registered = Registered {
            running: self.running.clone(),
            id,
        };
        let token = self.token.clone();
        self.tasks.spawn(async move {
            let _registered = registered;
            match AssertUnwindSafe(task).catch_unwind().await {
                Ok(()) if token.is_cancelled() => tracing::debug!(task = name, "task stopped"),
                Ok(()) => tracing::warn!(task = name, "task ended before shutdown"),
                Err(panic) => {
                    tracing::error!(task = name, "task panicked: {}", panic_text(panic.as_ref()))
                }
            }
        })
    }

    /// Begins shutdown and waits for every task spawned through this signal, at most `grace`.
    /// Returns the names of the tasks still running then (empty when all stopped).
    pub async fn finish(&self, grace: Duration) -> Vec<&'static str> {
        self.token.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            return Vec::new();
        }
        let left: Vec<&'static str> = self.running.names.locked().values().copied().collect();
        tracing::warn!(
            ?left,
            "tasks still running {} s after shutdown",
            grace.as_secs_f32()
        );
        left
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Resolves when the process is asked to stop: Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finish_waits_for_every_task_and_names_the_stuck_ones() {
        let shutdown = Shutdown::new();
        let stopped = Arc::new(AtomicU64::new(0));
        for _ in 0..3 {
            let (s, stopped) = (shutdown.clone(), stopped.clone());
            shutdown.spawn("polite", async move {
                s.cancelled().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                stopped.fetch_add(1, Ordering::SeqCst);
            });
        }
        shutdown.spawn("stuck", std::future::pending());
        let left = shutdown.finish(Duration::from_millis(300)).await;
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            3,
            "finish returned before the tasks ended"
        );
        assert_eq!(left, ["stuck"]);
    }

    #[tokio::test]
    async fn a_panicking_task_does_not_hold_shutdown_up() {
        let shutdown = Shutdown::new();
        shutdown.spawn("doomed", async { panic!("boom") });
        tokio::task::yield_now().await;
        assert!(shutdown.finish(Duration::from_secs(1)).await.is_empty());
        assert_eq!(panic_text(&"boom"), "boom");
    }

    #[tokio::test]
    async fn a_child_stops_alone_or_with_its_parent() {
        let shutdown = Shutdown::new();
        let alone = shutdown.child();
        let with_parent = shutdown.child();
        let ended = |s: &Shutdown| {
            let s2 = s.clone();
            s.spawn("child", async move { s2.cancelled().await })
        };
        let (a, b) = (ended(&alone), ended(&with_parent));
        alone.token().cancel();
        tokio::time::timeout(Duration::from_secs(1), a)
            .await
            .unwrap()
            .unwrap();
        assert!(!shutdown.is_cancelled() && !with_parent.is_cancelled());
        assert!(shutdown.finish(Duration::from_secs(1)).await.is_empty());
        assert!(b.is_finished());
    }
}
