//! Reconciles take turns in the order the controller hands keys over.
//! kube's controller can bound its own concurrency, but a key that arrives
//! while every slot is busy waits in a hash set and is taken in hash order
//! (`kube_runtime::scheduler`, `pending`): under a burst the first keys
//! created were among the last minted, and a key's wait was a random draw
//! over the whole queue. So the controller runs unbounded and each
//! reconcile waits here, on tokio's semaphore, which is FIFO.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The reconcile slots (`--concurrency`), shared by every reconcile.
#[derive(Clone)]
pub struct Turns(Arc<Semaphore>);

impl Turns {
    /// `concurrency` slots; 0 means no bound, as kube's own setting.
    #[must_use]
    pub fn new(concurrency: u16) -> Turns {
        let slots = match concurrency {
            0 => Semaphore::MAX_PERMITS,
            n => usize::from(n),
        };
        Turns(Arc::new(Semaphore::new(slots)))
    }

    /// Waits for a slot, behind every reconcile that asked before; None
    /// once shutting down (a key still waiting then is left for the next
    /// start, which reconciles every key).
    pub async fn wait(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().acquire_owned().await.ok()
    }

    /// Shutting down: reconciles still waiting give up.
    pub fn close(&self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_taken_in_the_order_asked_and_end_at_close() {
        let turns = Turns::new(1);
        let first = turns.wait().await.expect("a slot");
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..20 {
            let (turns, order) = (turns.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _turn = turns.wait().await;
                order.lock().expect("order").push(i);
            }));
            // Each asks before the next one is spawned.
            tokio::task::yield_now().await;
        }
        drop(first);
        for w in waiting {
            w.await.expect("joined");
        }
        assert_eq!(*order.lock().expect("order"), (0..20).collect::<Vec<_>>());
        turns.close();
        assert!(turns.wait().await.is_none());
        assert!(Turns::new(0).wait().await.is_some(), "0: no bound");
    }
}
