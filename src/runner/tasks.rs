//! Spawning into a `JoinSet` that stays as small as the work in progress.

use std::future::Future;

use tokio::task::JoinSet;

/// Spawns `task` into `set` and drops the tasks of `set` that have
/// finished. A finished task keeps its memory (about 1.3 KB) until it is
/// joined, so a loop that only joins when a `select!` happens to pick that
/// branch lets them pile up for the length of the run.
pub(super) fn spawn_reaping<F>(set: &mut JoinSet<()>, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    set.spawn(task);
    while set.try_join_next().is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finished_tasks_do_not_stay_in_the_set() {
        let mut set = JoinSet::new();
        for _ in 0..100 {
            spawn_reaping(&mut set, async {});
            // The task just spawned runs to its end here.
            tokio::task::yield_now().await;
            assert!(set.len() <= 2, "{} tasks kept", set.len());
        }
    }
}
