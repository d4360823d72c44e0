//! The run engine: lifecycle state machine, worker pool, abort handling and crash recovery.

pub mod state;
