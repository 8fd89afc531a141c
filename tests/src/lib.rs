//! Test support for walbuf's cross-crate scenario tests: a simulated disk ([`sim`]) and the
//! checks shared by the `log_*` tests ([`check`]).

pub mod check;
pub mod sim;
