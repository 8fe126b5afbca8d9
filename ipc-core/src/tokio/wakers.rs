//! One waker that wakes many tasks.
//!
//! tokio's readiness and a `JoinHandle` keep one waker each: the last task
//! to poll them. Where several tasks wait on one of those at once (accept
//! loops sharing a listener, receivers waiting for one decode), each
//! registers its own waker here and polls with this set's waker, which
//! wakes every task registered since the last wake. A woken task that finds
//! nothing for it registers again.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

/// The tasks waiting on one thing.
#[derive(Debug, Default)]
pub(crate) struct WakerSet {
    waiting: Mutex<Vec<Waker>>,
}

impl WakerSet {
    /// Registers the task of `cx` and returns the waker that wakes every
    /// registered task, to poll the shared thing with.
    pub(crate) fn register(self: &Arc<Self>, cx: &Context<'_>) -> Waker {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        drop(waiting);
        Waker::from(self.clone())
    }
}

impl Wake for WakerSet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiting =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in waiting {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_wake_reaches_every_registered_task_once() {
        let set = Arc::new(WakerSet::default());
        let counts: Vec<_> = (0..3)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let mut shared = None;
        for count in &counts {
            let waker = Waker::from(count.clone());
            let cx = Context::from_waker(&waker);
            shared = Some(set.register(&cx));
            // Registering the same task twice keeps one entry.
            set.register(&cx);
        }
        shared.clone().unwrap().wake_by_ref();
        shared.unwrap().wake();
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [1, 1, 1], "a wake drains the set");
    }
}
