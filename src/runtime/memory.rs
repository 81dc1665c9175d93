//! Handing freed heap back to the kernel. glibc keeps what a burst freed
//! for reuse (a 10,000-key mint leaves the heap at ~31 MiB but the process
//! resident at ~48), and a watch list of N objects frees N whole objects
//! around the few bytes kept of each: both processes ask it to give the
//! pages back when a burst is likely over.

use std::time::Duration;

/// Gives free heap pages back to the kernel (glibc, which the image's
/// static build uses too; a no-op on other C libraries).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free heap pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Every `period`, for as long as the process runs: a trim costs a walk of
/// the free lists (milliseconds at tens of MiB), so a burst's leftovers are
/// gone within one period of it ending.
pub async fn trim_periodically(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        return_freed_memory();
    }
}
