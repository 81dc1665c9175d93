//! Handing freed heap back to the kernel. glibc keeps what a burst freed
//! for reuse (a 10,000-key mint leaves the heap at ~31 MiB but the process
//! resident at ~48), and a watch list of N objects frees N whole objects
//! around the few bytes kept of each: both processes ask it to give the
//! pages back when a burst is likely over.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::queue::WorkQueue;

/// Gives free heap pages back to the kernel (glibc, which the image's
/// static build uses too; a no-op on other C libraries).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free heap pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// As soon as `queue` has worked through a burst (the initial list after a
/// start, a mass create), and every `period` besides, for as long as the
/// process runs: a trim costs a walk of the free lists (milliseconds at tens
/// of MiB), and what a burst's reconciles freed is then given back at once.
pub async fn trim_after_bursts<K: Hash + Eq + Clone>(period: Duration, queue: Arc<WorkQueue<K>>) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = queue.drained() => {}
        }
        return_freed_memory();
    }
}
