//! The store's behaviour on both backends (Postgres when `TEST_POSTGRES_URL` is set).

#[path = "../support/mod.rs"]
mod support;

mod behaviour;
