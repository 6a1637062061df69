//! The workspace's one error convention, as the executor uses it.
//!
//! Library errors are `thiserror` enums whose messages name what failed and do not
//! repeat their cause (it is their `source()`); [`error_chain`] puts the whole chain on
//! one line where an error leaves the library (a log field, a status message, the
//! CLI's one-line error). Exit codes come from the contract: [`EXECUTOR_FAILED`] (125)
//! whenever the executor itself fails.

pub use runner_contract::error_chain;
pub use runner_contract::exit::{EXECUTOR_FAILED, TIMED_OUT};
