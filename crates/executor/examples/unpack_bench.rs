//! Compares `executor::unpack` with GNU tar on the same layer and file system.
//!
//! Usage: `cargo run -p executor --example unpack_bench -- LAYER.tar [DIR]` (DIR defaults to
//! /dev/shm: creating files on / is slow and erratic on the test machines). Prints both
//! times and their ratio; run it with `--release` for numbers that mean something.

use executor::unpack::{Compression, UnpackOptions, unpack_stream};
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let layer = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: unpack_bench LAYER.tar [DIR]"))?,
    );
    let base = PathBuf::from(args.next().unwrap_or_else(|| "/dev/shm".into()));
    let ours = tempfile::tempdir_in(&base)?;
    let theirs = tempfile::tempdir_in(&base)?;

    let start = Instant::now();
    let stats = unpack_stream(
        File::open(&layer)?,
        Compression::None,
        ours.path(),
        &UnpackOptions::default(),
    )?;
    let t_ours = start.elapsed();

    let start = Instant::now();
    let status = Command::new("tar")
        .args(["--same-owner", "-p", "-xf"])
        .arg(&layer)
        .arg("-C")
        .arg(theirs.path())
        .status()?;
    anyhow::ensure!(status.success(), "tar failed: {status}");
    let t_tar = start.elapsed();

    println!(
        "{} entries, {} MiB on {}: executor {:.3}s, GNU tar {:.3}s, ratio {:.2}",
        stats.entries,
        stats.bytes >> 20,
        base.display(),
        t_ours.as_secs_f64(),
        t_tar.as_secs_f64(),
        t_ours.as_secs_f64() / t_tar.as_secs_f64()
    );
    Ok(())
}
