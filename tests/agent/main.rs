//! The agent, in one test binary.

mod hosts;
