//! Exit codes: of a runner (the SDK's `runner::main`), and of `executor run`, which passes
//! the runner's own code through and adds two of its own (podman's convention).

/// The runner succeeded.
pub const SUCCEEDED: u8 = 0;
/// The runner failed (its message says why).
pub const FAILED: u8 = 1;
/// The runner's inputs are invalid: a missing variable, a malformed context or args file.
pub const INVALID_INPUT: u8 = 2;
/// The runner ran out of time (the context's `timeout`, or the executor's `--timeout`).
pub const TIMED_OUT: u8 = 124;
/// The executor itself failed: the runner may not have run at all.
pub const EXECUTOR_FAILED: u8 = 125;
