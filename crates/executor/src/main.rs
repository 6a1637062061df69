//! The `executor` binary: parses flags, sets up logging and calls the library.

mod cli;

fn main() -> std::process::ExitCode {
    tune_malloc();
    cli::main()
}

/// A pull hands the network's buffers (a few hundred KiB each) to the hashing
/// thread and frees them there. With glibc's defaults each one comes from fresh
/// memory (mmap, or heap grown and trimmed again), so every byte pulled was also a
/// page fault (about 17,000 for the benchmark's 262 MB image). Keeping those sizes
/// on the heap and not trimming it below 32 MiB lets the same pages serve again.
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}
