//! Agents on their own hosts: each test makes a network namespace joined by a veth pair
//! (10.203.n.0/30), runs `chaosbot agent` inside with TLS and a secret, and drives it from a
//! controller (`chaosbot run`, the real binary) outside. The link can be cut; processes can be
//! killed with SIGKILL. Without root or `ip`, each test prints `SKIP: <why>` and returns.

pub mod api;
pub mod certs;
pub mod fixture;
pub mod netns;
pub mod netsite;
pub mod traffic;

mod agent_restart;
mod auth;
mod control_restart;
mod controller_kill;
mod harness;
mod link_cut;
mod netfaults;
mod shaped;

/// A [`fixture::Site`] with its agent started, or `SKIP:` and return.
#[macro_export]
macro_rules! site_or_skip {
    ($opts:expr) => {
        match $crate::hosts::fixture::Site::new($opts) {
            Ok(mut site) => {
                site.start_agent().await;
                site
            }
            Err(why) => {
                eprintln!("SKIP: {why}");
                return;
            }
        }
    };
}
