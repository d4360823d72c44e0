//! [`forward_store!`](crate::forward_store): implements parts of the store by forwarding every
//! call to a wrapped store, so a wrapper (a test double) writes only the parts it intercepts.
//!
//! ```ignore
//! struct Recording { inner: DynStore, /* ... */ }
//! chaosbot::forward_store!(Recording => inner: RunStore, JournalStore, EdgeStore);
//! // ... and `impl OutboxQueue for Recording` (and the other parts) by hand.
//! ```
//!
//! The method lists below repeat the traits' signatures; a trait that gains a method fails to
//! compile here until it is added.

/// `forward_store!(Type => field: Part, Part, ...)` implements each named part of the store
/// (`Store` itself, `RunStore`, `JournalStore`, `AbortStore`, `FaultStore`, `OutboxQueue`,
/// `OutboxDelivery`, `EdgeStore`, `LearningStore`, `ScheduleStore`, `DigestStore`,
/// `GamedayStore`) for `Type` by calling the same method on `self.field`.
#[macro_export]
macro_rules! forward_store {
    ($ty:ty => $field:ident: $($part:ident),+ $(,)?) => {
        $( $crate::forward_store!(@part $part, $ty, $field); )+
    };

    (@part Store, $ty:ty, $field:ident) => {
        #[$crate::store::__async_trait]
        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                self.$field.backend()
            }
            async fn ping(&self) -> $crate::store::StoreResult<()> {
                self.$field.ping().await
            }
            fn changes(
                &self,
            ) -> Option<tokio::sync::broadcast::Receiver<$crate::store::Change>> {
                self.$field.changes()
            }
        }
    };
    (@part RunStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl RunStore, $ty, $field {
            fn create_run(run: $crate::store::NewRun, submitted: $crate::run::Event)
                -> $crate::store::RunRecord;
            fn get_run(id: &str) -> Option<$crate::store::RunRecord>;
            fn list_runs(filter: $crate::store::RunFilter) -> Vec<$crate::store::RunRecord>;
            fn runs_between(from_ms: i64, to_ms: i64) -> Vec<$crate::store::RunRecord>;
            fn claim_next(owner: &str, lease: std::time::Duration, max_active: u32)
                -> Option<$crate::store::RunRecord>;
            fn claim_run(id: &str, owner: &str, lease: std::time::Duration, max_active: u32)
                -> Option<$crate::store::RunRecord>;
            fn renew_lease(id: &str, owner: &str, lease: std::time::Duration) -> ();
            fn transition(id: &str, owner: &str, to: $crate::run::RunState) -> $crate::run::Entry;
            fn finish_run(
                id: &str,
                verdict: $crate::run::Verdict,
                rollback: $crate::run::RollbackOutcome,
                reason: &str
            ) -> $crate::run::Entry;
            fn orphaned_runs(now_ms: i64, dead_owners: &[String]) -> Vec<$crate::store::RunRecord>;
            fn active_owners() -> Vec<String>;
            fn adopt_orphan(id: &str, owner: &str, lease: std::time::Duration, seen_epoch: u64)
                -> Option<$crate::store::RunRecord>;
            fn finish_fenced(
                id: &str,
                fence: &$crate::store::Fence,
                verdict: $crate::run::Verdict,
                rollback: $crate::run::RollbackOutcome,
                reason: &str
            ) -> $crate::run::Entry;
            fn clock_ms() -> i64;
            fn target_holders(targets: &[String]) -> Vec<$crate::store::TargetHold>;
            fn queue_place(id: &str) -> $crate::store::QueuePlace;
            fn fail_queued(id: &str, reason: &str) -> bool;
            fn queued_before(created_before_ms: i64) -> Vec<String>;
        });
    };
    (@part JournalStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl JournalStore, $ty, $field {
            fn append(id: &str, event: &$crate::run::Event) -> $crate::run::Entry;
            fn append_fenced(id: &str, fence: &$crate::store::Fence, event: &$crate::run::Event)
                -> $crate::run::Entry;
            fn journal(id: &str, after_seq: i64) -> Vec<$crate::run::Entry>;
        });
    };
    (@part AbortStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl AbortStore, $ty, $field {
            fn request_abort(scope: $crate::store::AbortScope, requested_by: &str, reason: &str)
                -> $crate::store::AbortOutcome;
            fn pending_abort(id: &str) -> Option<$crate::store::AbortRequest>;
        });
    };
    (@part FaultStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl FaultStore, $ty, $field {
            fn record_fault(fault: $crate::store::NewFault) -> i64;
            fn mark_fault_reverted(fault_id: i64) -> ();
            fn open_faults(run_id: &str) -> Vec<$crate::store::FaultRecord>;
        });
    };
    (@part OutboxQueue, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl OutboxQueue, $ty, $field {
            fn enqueue(
                messages: &[$crate::store::outbox::OutboundMessage],
                cursor: Option<(&str, i64)>
            ) -> ();
            fn render_cursor(run_id: &str) -> i64;
            fn enqueue_rendered(
                messages: &[$crate::store::outbox::OutboundMessage],
                run_id: &str,
                epoch: u64,
                from_seq: i64,
                to_seq: i64
            ) -> bool;
            fn next_revision(key: &str) -> i64;
        });
    };
    (@part OutboxDelivery, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl OutboxDelivery, $ty, $field {
            fn claim_heads(owner: &str, now_ms: i64, lease_until_ms: i64, limit: u32)
                -> Vec<$crate::store::outbox::OutboxRow>;
            fn message_ref(key: &str) -> Option<$crate::store::outbox::MessageRef>;
            fn post_pending(key: &str) -> bool;
            fn newer_updates(thread_key: &str, key: &str, after_id: i64)
                -> Vec<$crate::store::outbox::OutboxRow>;
            fn mark_delivered(done: $crate::store::outbox::Delivered<'_>) -> bool;
            fn reschedule(
                id: i64,
                owner: &str,
                next_attempt_ms: i64,
                error: Option<&str>,
                count_attempt: bool
            ) -> bool;
            fn set_call_started(id: i64, owner: &str, at: Option<i64>) -> bool;
            fn set_call_file(id: i64, owner: &str, file_id: &str) -> bool;
            fn mark_failed(id: i64, owner: &str, error: &str) -> bool;
            fn release_claims(owner: &str) -> u64;
            fn claim_owners() -> Vec<String>;
            fn pending_count() -> i64;
            fn outbox_rows(thread_key: Option<&str>) -> Vec<$crate::store::outbox::OutboxRow>;
            fn hold_method(method: &str, for_ms: i64) -> ();
            fn method_held_for(method: &str) -> Option<i64>;
            fn take_post_slot(channel: &str, interval_ms: i64, burst: u32, max_wait_ms: i64)
                -> $crate::store::outbox::PostSlot;
        });
    };
    (@part EdgeStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl EdgeStore, $ty, $field {
            fn remember_event(event_id: &str, at_ms: i64) -> bool;
            fn prune_events(before_ms: i64) -> u64;
            fn audit(entry: &$crate::store::AuditEntry) -> ();
            fn audit_log(limit: u32) -> Vec<$crate::store::AuditEntry>;
        });
    };
    (@part LearningStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl LearningStore, $ty, $field {
            fn open_qa(run_id: &str, channel: &str, opened_ms: i64, closes_ms: i64) -> bool;
            fn qa_session(run_id: &str) -> Option<$crate::store::learning::QaSession>;
            fn qa_sessions_closed(after_ms: i64, until_ms: i64)
                -> Vec<$crate::store::learning::QaSession>;
            fn run_for_thread(channel: &str, thread_ts: &str) -> Option<String>;
            fn add_question(q: &$crate::store::learning::NewQuestion)
                -> ($crate::store::learning::Question, bool);
            fn question_by_ts(channel: &str, ts: &str) -> Option<$crate::store::learning::Question>;
            fn question(id: i64) -> Option<$crate::store::learning::Question>;
            fn edit_question(channel: &str, ts: &str, text: &str, at_ms: i64)
                -> Option<$crate::store::learning::Question>;
            fn remove_question(channel: &str, ts: &str, at_ms: i64)
                -> Option<$crate::store::learning::Question>;
            fn questions(run_id: &str) -> Vec<$crate::store::learning::Question>;
            fn unanswered_questions(since_ms: i64) -> Vec<$crate::store::learning::Question>;
            fn add_vote(question_id: i64, voter: &str, event_at: i64) -> bool;
            fn remove_vote(question_id: i64, voter: &str, event_at: i64) -> bool;
            fn answer_question(id: i64, answer: &$crate::store::learning::Answer)
                -> Option<$crate::store::learning::Question>;
            fn add_learning(
                run_id: &str,
                kind: $crate::store::learning::LearningKind,
                text: &str,
                added_by: &str,
                added_ms: i64
            ) -> $crate::store::learning::Learning;
            fn learnings(run_id: &str) -> Vec<$crate::store::learning::Learning>;
        });
    };
    (@part ScheduleStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl ScheduleStore, $ty, $field {
            fn create_schedule(s: &$crate::store::schedules::NewSchedule)
                -> $crate::store::schedules::Schedule;
            fn get_schedule(id: i64) -> Option<$crate::store::schedules::Schedule>;
            fn list_schedules() -> Vec<$crate::store::schedules::Schedule>;
            fn remove_schedule(id: i64, by: &str, at_ms: i64) -> bool;
            fn get_fire(schedule_id: i64, fire_ms: i64) -> Option<$crate::store::schedules::Fire>;
            fn claim_heads_up(schedule_id: i64, fire_ms: i64, at_ms: i64) -> bool;
            fn claim_fire(schedule_id: i64, fire_ms: i64, owner: &str, at_ms: i64)
                -> Option<$crate::store::schedules::Fire>;
            fn skip_fire(schedule_id: i64, fire_ms: i64, by: &str, reason: &str)
                -> $crate::store::schedules::SkipOutcome;
            fn finish_fire(
                schedule_id: i64,
                fire_ms: i64,
                run_id: Option<&str>,
                skipped: Option<&str>
            ) -> ();
            fn set_halt(by: &str, reason: &str, at_ms: i64) -> $crate::store::schedules::Halt;
            fn lift_halt(by: &str, at_ms: i64) -> Option<$crate::store::schedules::Halt>;
            fn current_halt() -> Option<$crate::store::schedules::Halt>;
        });
    };
    (@part DigestStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl DigestStore, $ty, $field {
            fn enqueue_digest(
                period_start_ms: i64,
                period_end_ms: i64,
                queued_by: &str,
                messages: &[$crate::store::outbox::OutboundMessage]
            ) -> bool;
            fn digest(period_start_ms: i64) -> Option<$crate::store::digest::DigestRecord>;
        });
    };
    (@part GamedayStore, $ty:ty, $field:ident) => {
        $crate::forward_store!(@impl GamedayStore, $ty, $field {
            fn create_gameday(g: &$crate::store::gamedays::NewGameday)
                -> $crate::store::gamedays::GamedayRecord;
            fn get_gameday(id: &str) -> Option<$crate::store::gamedays::GamedayRecord>;
            fn list_gamedays(limit: u32) -> Vec<$crate::store::gamedays::GamedayRecord>;
            fn open_gamedays() -> Vec<$crate::store::gamedays::GamedayRecord>;
            fn claim_gameday(id: &str, owner: &str, now_ms: i64, lease_until_ms: i64) -> bool;
            fn release_gameday(id: &str, owner: &str) -> ();
            fn save_gameday_progress(
                id: &str,
                owner: &str,
                progress: &$crate::store::gamedays::GamedayProgress,
                now_ms: i64,
                lease_until_ms: i64
            ) -> bool;
            fn stop_gameday(id: &str, by: &str, reason: &str, now_ms: i64)
                -> Option<$crate::store::gamedays::GamedayRecord>;
            fn finish_gameday(id: &str, owner: &str, now_ms: i64) -> bool;
            fn close_gameday(id: &str, owner: &str, now_ms: i64) -> bool;
            fn post_queued(key: &str) -> bool;
        });
    };

    // Every method is `async fn m(&self, args) -> StoreResult<ret>`.
    (@impl $part:ident, $ty:ty, $field:ident {
        $( fn $m:ident($($arg:ident: $argty:ty),* $(,)?) -> $ret:ty; )*
    }) => {
        #[$crate::store::__async_trait]
        impl $crate::store::$part for $ty {
            $(
                async fn $m(&self, $($arg: $argty),*) -> $crate::store::StoreResult<$ret> {
                    use $crate::store::$part as _;
                    self.$field.$m($($arg),*).await
                }
            )*
        }
    };
}
