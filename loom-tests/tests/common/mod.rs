//! What every model file shares: running a model, and checking that a
//! model fails when one of its protections is removed.
//!
//! A protection in dmacap's source is removed by a [`Mutation`] switched
//! on with `set_mutations` (a no-op constant in the real build, see
//! `src/sync.rs`); a protection that lives in a model itself (the ordering
//! of a model's own flag) by a [`ModelMutation`].

#![allow(dead_code)]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use dmacap_loom::__loom::set_mutations;
#[allow(unused_imports)]
pub use dmacap_loom::__loom::{Mutation, pin_cpu};
use loom::thread;

/// A protection that lives in a model rather than in dmacap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelMutation {
    /// The completion flag is stored and loaded with `Relaxed` instead of
    /// `Release` and `Acquire`.
    FlagRelaxed,
}

thread_local! {
    static MODEL_MUTATION: Cell<Option<ModelMutation>> = const { Cell::new(None) };
}

/// Whether the model runs with `m` (see [`ModelMutation`]).
pub fn model_mutated(m: ModelMutation) -> bool {
    MODEL_MUTATION.with(|c| c.get() == Some(m))
}

/// Runs `f` as a loom model: every interleaving with up to two
/// preemptions, the body on a loom thread with a big stack.
pub fn model(f: impl Fn() + Sync + Send + 'static) {
    model_with_bound(2, f);
}

/// [`model`] with preemption bound `bound`.
pub fn model_with_bound(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let f = Arc::new(f);
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(move || {
        // loom's model threads have small stacks; the IOMMU's page-table
        // code wants more, so the model body runs on a thread with a big one.
        let f = f.clone();
        spawn(move || f()).join().unwrap();
    });
}

/// A loom thread with a stack big enough for dmacap's deeper paths.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(f)
        .expect("spawn")
}

/// Switches the mutations off again however the model ends.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        set_mutations(&[]);
        MODEL_MUTATION.with(|c| c.set(None));
    }
}

/// Runs `run` (a model) with `mutation` switched on and asserts that it
/// fails, with a panic message containing one of `reasons`.
pub fn assert_fails(run: fn(), mutation: Mutation, reasons: &[&str]) {
    let _reset = Reset;
    set_mutations(&[mutation]);
    check_failure(run, &format!("{mutation:?}"), reasons);
}

/// [`assert_fails`] for a [`ModelMutation`].
pub fn assert_fails_model(run: fn(), mutation: ModelMutation, reasons: &[&str]) {
    let _reset = Reset;
    MODEL_MUTATION.with(|c| c.set(Some(mutation)));
    check_failure(run, &format!("{mutation:?}"), reasons);
}

fn check_failure(run: fn(), name: &str, reasons: &[&str]) {
    let outcome = catch_unwind(AssertUnwindSafe(run));
    let payload = match outcome {
        Ok(()) => panic!("the model passed with its protection removed ({name})"),
        Err(p) => p,
    };
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    // Shown with `--nocapture`: which failure loom found.
    eprintln!("under {name} the model failed as it should: {msg}");
    assert!(
        reasons.iter().any(|r| msg.contains(r)),
        "under {name} the model failed, but not for the expected reason \
         (one of {reasons:?}): {msg}"
    );
}

/// The test that shows a model failing under `m`. An exhaustive match: a
/// new mutation does not compile until it names the test that checks it.
pub fn checked_by(m: Mutation) -> &'static str {
    match m {
        Mutation::LeakCountLoadStore => {
            "handles::concurrent_leaks_are_all_counted_fails_with_a_load_and_store_count"
        }
        Mutation::SimAllocChoiceUnlocked => {
            "handles::simulated_allocator_never_hands_out_a_byte_twice_fails_with_an_unlocked_choice"
        }
        Mutation::BounceChoiceUnlocked => {
            "concurrent_flush::bounce_pool_never_hands_a_slot_to_two_mappings_fails_with_an_unlocked_choice"
        }
        Mutation::LazyFreeBeforeInvalidate => {
            "concurrent_flush::lazy_retire_never_hands_out_a_stale_iova_fails_freeing_before_the_invalidation"
        }
        Mutation::LazyNoInvalidate => {
            "concurrent_flush::lazy_retire_never_hands_out_a_stale_iova_fails_without_the_invalidation, \
             concurrent_flush::concurrent_lazy_flushes_lose_no_invalidation_fails_without_the_invalidation"
        }
        Mutation::LazyQueueBeforeClear => {
            "concurrent_flush::concurrent_lazy_flushes_lose_no_invalidation_fails_queueing_before_clearing"
        }
        Mutation::GatherTakesAll => {
            "strict::concurrent_strict_flushes_fail_when_a_flush_takes_every_threads_unmaps"
        }
        Mutation::StrictIssueWithoutSync => {
            "strict::concurrent_strict_flushes_fail_when_a_flush_does_not_wait_for_its_invalidation, \
             teardown::batch_flush_races_a_device_teardown_attempt_fails_when_the_flush_does_not_wait"
        }
        Mutation::StrictFreeBeforeInvalidate => {
            "strict::concurrent_strict_flushes_fail_when_iovas_are_freed_before_their_invalidation"
        }
        Mutation::DeviceWidePendingFlag => {
            "noncoherent::two_threads_batch_on_one_noncoherent_device_fails_with_a_device_wide_pending_flag"
        }
        Mutation::DomainDropFreesLiveTables => {
            "teardown::batch_flush_races_a_device_teardown_attempt_fails_when_the_domain_frees_live_tables"
        }
    }
}
