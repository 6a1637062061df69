//! The `executor` binary: parses flags, sets up logging and calls the library.

mod cli;

fn main() -> std::process::ExitCode {
    executor::sys::tune_malloc();
    cli::main()
}
