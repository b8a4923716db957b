//! Running a build's stages: each stage starts once the stages it needs have finished, and
//! independent stages run at the same time, at most `jobs` at once (`kiln build --jobs`).
//!
//! Stages run on scoped threads sharing one [`Build`] (store, cache, guest). The first failure
//! wins: it marks the build cancelled and cuts the guest's connection, so stages that have not
//! started give up and running RUN steps end at once; that first error is the build's.

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};

use crate::stage::{lock, Build, PlannedStage};
use crate::{BuildError, Reporter};

/// Runs `stages` (dependencies before dependents, as the graph lists them).
pub fn run_stages(build: &Build<'_>, stages: &[PlannedStage<'_>], jobs: usize, out: &Reporter) -> Result<(), BuildError> {
    let multi = stages.iter().filter(|s| s.target == 0).count() > 1;
    if jobs <= 1 || stages.len() <= 1 {
        for s in stages {
            build.run_stage(*s, multi, out)?;
        }
        return Ok(());
    }
    let slots = Slots { free: Mutex::new(jobs), freed: Condvar::new() };
    let first_error: Mutex<Option<BuildError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for &stage in stages {
            let (slots, first_error) = (&slots, &first_error);
            scope.spawn(move || {
                let result = wait_for_deps(build, stage).and_then(|()| {
                    let _slot = slots.take(build)?;
                    build.run_stage(stage, multi, out)
                });
                if let Err(e) = result {
                    let mut first = lock(first_error);
                    if first.is_none() && !matches!(e, BuildError::Cancelled) {
                        *first = Some(e);
                    }
                    let first_failure = !build.cancelled.swap(true, Ordering::Relaxed);
                    drop(first);
                    if first_failure {
                        build.abort_running_steps();
                    }
                    // Wake the stages waiting for this one or for a slot: they give up. Taking
                    // each lock first means no waiter is between its check and its wait.
                    drop(lock(&build.done));
                    build.stage_done.notify_all();
                    drop(lock(&slots.free));
                    slots.freed.notify_all();
                    build.wake_step_waiters();
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None if build.cancelled.load(Ordering::Relaxed) => Err(BuildError::Interrupted),
        None => Ok(()),
    }
}

fn wait_for_deps(build: &Build<'_>, planned: PlannedStage<'_>) -> Result<(), BuildError> {
    let mut done = lock(&build.done);
    loop {
        if build.cancelled.load(Ordering::Relaxed) {
            return Err(BuildError::Cancelled);
        }
        if planned.stage.deps.iter().all(|d| done.contains_key(&(planned.target, *d))) {
            return Ok(());
        }
        done = build.stage_done.wait(done).unwrap_or_else(|e| e.into_inner());
    }
}

/// A counting semaphore for `--jobs`.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn take<'a>(&'a self, build: &Build<'_>) -> Result<Slot<'a>, BuildError> {
        let mut free = lock(&self.free);
        loop {
            if build.cancelled.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            if *free > 0 {
                *free -= 1;
                return Ok(Slot(self));
            }
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}
