//! The thread pool the kernels run on. The elements' `threads` property (0 = every core) sets it
//! through [`set_threads`]; a caller that wants its own pool can instead run its work inside
//! `rayon::ThreadPool::install`: kernels called from a rayon worker thread stay in that
//! worker's pool rather than hopping to this one.

use std::sync::{Arc, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

static POOL: RwLock<Option<(usize, Arc<ThreadPool>)>> = RwLock::new(None);

fn resolve(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// Sets how many threads the kernels use (0 = every core). Rebuilds the pool only when the
/// count changes; work already running on the old pool finishes there.
pub fn set_threads(threads: usize) {
    let n = resolve(threads);
    let mut pool = POOL.write().unwrap_or_else(|e| e.into_inner());
    if pool.as_ref().is_some_and(|(have, _)| *have == n) {
        return;
    }
    let built = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("npuwhisper-k{i}"))
        .build()
        .expect("spawning the kernel threads");
    *pool = Some((n, Arc::new(built)));
}

/// The pool kernels run on, built with every core on first use.
pub fn pool() -> Arc<ThreadPool> {
    if let Some((_, pool)) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return pool.clone();
    }
    set_threads(0);
    pool()
}

/// How many threads a kernel called from here would use.
pub fn threads() -> usize {
    if rayon::current_thread_index().is_some() {
        rayon::current_num_threads()
    } else {
        pool().current_num_threads()
    }
}

/// Runs `op` on the kernels' pool; on a rayon worker thread (of any pool) it runs in place,
/// so nested kernels and callers that installed their own pool pay no hand-off.
pub fn install<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        op()
    } else {
        pool().install(op)
    }
}

/// `len` zeros in the buffer `slot` holds for this thread (taken out of it; put it back with
/// `slot.set` when done): a kernel's per-call temporary of a megabyte or more would otherwise
/// be fresh pages from the system on every call, a page fault per 4 KiB.
pub(crate) fn reused_zeroed<T: Copy + Default>(
    slot: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>,
    len: usize,
) -> Vec<T> {
    let mut buffer = slot.take();
    buffer.clear();
    buffer.resize(len, T::default());
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_follow_the_setting_and_zero_means_all_cores() {
        set_threads(1);
        assert_eq!(install(rayon::current_num_threads), 1);
        set_threads(0);
        assert_eq!(install(rayon::current_num_threads), resolve(0));
        let own = ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        assert_eq!(own.install(threads), 3);
    }
}
