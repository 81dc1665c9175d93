//! The controller's work queue: which ApiKeys to reconcile, oldest first.
//!
//! The shape of client-go's workqueue, which Go operators run on: a key is
//! queued at most once however often it is triggered; it is handed to one
//! worker at a time, and a trigger that arrives while it runs queues it
//! again for after the run; a retry waits in a timer table until it is due
//! (the earliest of two retries wins), and a trigger makes it due at once.
//!
//! kube's controller schedules the same way but hands out the keys that
//! are due in hash order once its workers are all busy: under a burst of
//! 1,000 creates some waited for the whole burst (apply→Active p99 2.5 ×
//! the floor's). Here they are taken in the order they were triggered. Its
//! tables also kept the capacity a burst or the initial list had given them
//! (7 MiB at 10,000 keys); these are shrunk once they are empty.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Keys to work on, taken in the order they became due.
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    /// Woken on every change a waiting worker may care about.
    changed: Notify,
    /// How many keys are due and not running, for `/metrics`.
    depth: Gauge,
    /// Told when a burst is over (`drained`).
    drained: Notify,
}

struct State<K> {
    /// Due, not running, in the order they became due.
    due: VecDeque<K>,
    /// Due: in `due`, or queued again while running.
    queued: HashSet<K>,
    running: HashSet<K>,
    /// Retries that are not due yet, by when; `sequence` orders equal times.
    timers: BTreeMap<(Instant, u64), K>,
    timer_of: HashMap<K, (Instant, u64)>,
    sequence: u64,
    /// Keys handed out since the queue was last idle.
    taken_since_idle: usize,
    shut_down: bool,
}

/// Tables this big that have emptied give their memory back.
const SHRINK_ABOVE: usize = 1024;

/// This many keys handed out before the queue goes idle make a burst.
const BURST: usize = 256;

impl<K: Hash + Eq + Clone> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue::new(Gauge::default())
    }
}

impl<K: Hash + Eq + Clone> WorkQueue<K> {
    /// A queue that keeps `depth` at the number of keys due and waiting.
    pub fn new(depth: Gauge) -> Self {
        WorkQueue {
            state: Mutex::new(State {
                due: VecDeque::new(),
                queued: HashSet::new(),
                running: HashSet::new(),
                timers: BTreeMap::new(),
                timer_of: HashMap::new(),
                sequence: 0,
                taken_since_idle: 0,
                shut_down: false,
            }),
            changed: Notify::new(),
            depth,
            drained: Notify::new(),
        }
    }

    /// Makes the key due now (a no-op if it is due already).
    pub fn add(&self, key: K) {
        let added = self.change(|state| state.make_due(key));
        if added {
            self.changed.notify_waiters();
        }
    }

    /// Makes the key due after `delay`, unless it is due sooner already.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let earlier = self.lock().set_timer(key, Instant::now() + delay);
        if earlier {
            self.changed.notify_waiters();
        }
    }

    /// The next due key, for one worker; waits until there is one. `None`
    /// once the queue is shut down: keys still queued are left, as a
    /// process that stops leaves them to the next one.
    pub async fn next(&self) -> Option<K> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = {
                let mut state = self.lock();
                if state.shut_down {
                    return None;
                }
                state.fire_timers(Instant::now());
                let taken = state.take();
                self.depth.set(state.depth());
                if taken.is_some() {
                    return taken;
                }
                state.next_timer()
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// The worker is done with `key`: if it was triggered meanwhile, it is
    /// due again (at the back of the line).
    pub fn done(&self, key: &K) {
        let (again, burst_over) = self.change(|state| (state.finish(key), state.burst_over()));
        if again {
            self.changed.notify_waiters();
        }
        if burst_over {
            self.drained.notify_one();
        }
    }

    /// Resolves once a burst of work (an initial list, a mass create) is
    /// over: the queue went idle after handing out many keys. Their
    /// reconciles' memory is then free to hand back (`runtime::memory`).
    pub async fn drained(&self) {
        self.drained.notified().await;
    }

    /// Workers get `None` from now on.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.changed.notify_waiters();
    }

    /// How many keys are due and not running.
    pub fn depth(&self) -> usize {
        self.lock().due.len()
    }

    /// Changes the state and reports the depth it leaves.
    fn change<T>(&self, change: impl FnOnce(&mut State<K>) -> T) -> T {
        let mut state = self.lock();
        let result = change(&mut state);
        self.depth.set(state.depth());
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq + Clone> State<K> {
    fn depth(&self) -> i64 {
        i64::try_from(self.due.len()).unwrap_or(i64::MAX)
    }

    /// Returns whether a worker may now take it.
    fn make_due(&mut self, key: K) -> bool {
        if self.queued.contains(&key) {
            return false;
        }
        self.cancel_timer(&key);
        self.queued.insert(key.clone());
        if self.running.contains(&key) {
            return false;
        }
        self.due.push_back(key);
        true
    }

    /// Returns whether the key now has an earlier timer than before.
    fn set_timer(&mut self, key: K, at: Instant) -> bool {
        if self.queued.contains(&key) {
            return false;
        }
        if let Some(&(current, _)) = self.timer_of.get(&key) {
            if current <= at {
                return false;
            }
            self.cancel_timer(&key);
        }
        self.sequence += 1;
        let slot = (at, self.sequence);
        self.timers.insert(slot, key.clone());
        self.timer_of.insert(key, slot);
        true
    }

    fn cancel_timer(&mut self, key: &K) {
        if let Some(slot) = self.timer_of.remove(key) {
            self.timers.remove(&slot);
        }
    }

    /// Makes every key whose timer is due by `now` due, in timer order.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.timer_of.remove(&key);
            self.make_due(key);
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.keys().next().map(|&(at, _)| at)
    }

    fn take(&mut self) -> Option<K> {
        let key = self.due.pop_front()?;
        self.queued.remove(&key);
        self.running.insert(key.clone());
        self.taken_since_idle += 1;
        Some(key)
    }

    /// Returns whether the key is due again.
    fn finish(&mut self, key: &K) -> bool {
        self.running.remove(key);
        let again = self.queued.contains(key);
        if again {
            self.due.push_back(key.clone());
        }
        self.shrink_if_idle();
        again
    }

    /// Whether the queue just went idle after a burst (once per burst).
    fn burst_over(&mut self) -> bool {
        if !(self.due.is_empty() && self.running.is_empty()) {
            return false;
        }
        let burst = self.taken_since_idle >= BURST;
        self.taken_since_idle = 0;
        burst
    }

    /// A burst or the initial list leaves big, empty tables behind.
    fn shrink_if_idle(&mut self) {
        if self.due.is_empty() && self.due.capacity() > SHRINK_ABOVE {
            self.due.shrink_to_fit();
        }
        if self.queued.is_empty() && self.queued.capacity() > SHRINK_ABOVE {
            self.queued.shrink_to_fit();
        }
        if self.running.len() < SHRINK_ABOVE / 4 && self.running.capacity() > SHRINK_ABOVE {
            self.running.shrink_to_fit();
        }
        if self.timer_of.len() < SHRINK_ABOVE / 4 && self.timer_of.capacity() > SHRINK_ABOVE {
            self.timer_of.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::Arc;

    async fn take_all_due(queue: &WorkQueue<u32>) -> Vec<u32> {
        let mut taken = Vec::new();
        while queue.depth() > 0 {
            let key = queue.next().await.expect("not shut down");
            taken.push(key);
        }
        taken
    }

    #[tokio::test]
    async fn keys_are_taken_in_the_order_they_became_due() {
        let queue = WorkQueue::default();
        for key in [5, 3, 9, 1, 7] {
            queue.add(key);
        }
        assert_eq!(take_all_due(&queue).await, [5, 3, 9, 1, 7]);
    }

    #[tokio::test]
    async fn a_key_triggered_twice_is_queued_once() {
        let queue = WorkQueue::default();
        for key in [1, 2, 1, 1, 3, 2] {
            queue.add(key);
        }
        assert_eq!(take_all_due(&queue).await, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_key_triggered_while_it_runs_runs_again_after_it_not_beside_it() {
        let queue = WorkQueue::default();
        queue.add(1);
        queue.add(2);
        assert_eq!(queue.next().await, Some(1));
        queue.add(1);
        assert_eq!(queue.depth(), 1, "1 waits for its run to end");
        assert_eq!(queue.next().await, Some(2));
        queue.done(&1);
        assert_eq!(queue.next().await, Some(1));
        queue.done(&1);
        queue.done(&2);
        assert_eq!(queue.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_its_time_and_the_earlier_of_two_wins() {
        let queue = WorkQueue::default();
        queue.add_after(1, Duration::from_secs(10));
        queue.add_after(2, Duration::from_secs(5));
        queue.add_after(1, Duration::from_secs(2));
        queue.add_after(2, Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(queue.next().await, Some(1));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(queue.next().await, Some(2));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_makes_a_waiting_retry_due_at_once() {
        let queue = WorkQueue::default();
        queue.add_after(1, Duration::from_secs(30));
        queue.add(1);
        let start = Instant::now();
        assert_eq!(queue.next().await, Some(1));
        assert_eq!(start.elapsed(), Duration::ZERO);
        queue.done(&1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            queue.depth(),
            0,
            "the timer was cancelled, not left to fire"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_worker_wakes_for_a_new_key_and_for_an_earlier_timer() {
        let queue = Arc::new(WorkQueue::default());
        queue.add_after(1, Duration::from_secs(60));
        let worker = tokio::spawn({
            let queue = queue.clone();
            async move { (queue.next().await, queue.next().await) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.add_after(2, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        queue.add(3);
        let start = Instant::now();
        assert_eq!(worker.await.expect("worker"), (Some(2), Some(3)));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn shutting_down_releases_waiting_workers() {
        let queue = Arc::new(WorkQueue::<u32>::default());
        let worker = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(worker.await.expect("worker"), None);
        queue.add(1);
        assert_eq!(queue.next().await, None);
    }

    #[tokio::test]
    async fn the_depth_gauge_counts_keys_due_and_not_running() {
        let depth = Gauge::default();
        let queue = WorkQueue::new(depth.clone());
        queue.add(1);
        queue.add(2);
        queue.add(2);
        assert_eq!(depth.get(), 2);
        let key = queue.next().await.expect("key");
        assert_eq!(depth.get(), 1);
        queue.add(key);
        assert_eq!(
            depth.get(),
            1,
            "a running key queued again waits for its run"
        );
        queue.done(&key);
        assert_eq!(depth.get(), 2);
    }

    #[tokio::test]
    async fn emptied_tables_give_their_memory_back() {
        let queue = WorkQueue::default();
        for key in 0..10_000 {
            queue.add(key);
        }
        while queue.depth() > 0 {
            let key = queue.next().await.expect("key");
            queue.done(&key);
        }
        let state = queue.lock();
        assert!(state.due.capacity() <= SHRINK_ABOVE);
        assert!(state.queued.capacity() <= SHRINK_ABOVE);
        assert!(state.running.capacity() <= SHRINK_ABOVE);
    }

    #[tokio::test]
    async fn a_burst_worked_through_is_told_once_and_a_trickle_never() {
        let queue = WorkQueue::default();
        let told = |queue: &WorkQueue<i32>| queue.drained().now_or_never().is_some();
        for key in 0..10 {
            queue.add(key);
            let key = queue.next().await.expect("key");
            queue.done(&key);
        }
        assert!(!told(&queue), "ten keys one by one are no burst");
        for key in 0..BURST as i32 {
            queue.add(key);
        }
        let first = queue.next().await.expect("key");
        while queue.depth() > 0 {
            let key = queue.next().await.expect("key");
            queue.done(&key);
        }
        assert!(!told(&queue), "not over while a key still runs");
        queue.done(&first);
        assert!(told(&queue));
        assert!(!told(&queue), "once per burst");
    }
}
