//! Game days in the channel: the driver that runs open game days (posting the opening, the
//! notes between items and the closing summary, and starting each item through the
//! application layer), and their Block Kit rendering. The plans themselves are in
//! [`crate::gameday`].

pub mod driver;
pub mod render;

pub use driver::{GamedayDriver, GamedayOptions};
