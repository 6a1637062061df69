//! Unpacks one layer with `executor::unpack`, for timing against GNU tar on the same layer and
//! file system (`tests/bench/run.sh` does that side by side).
//!
//! Usage: `unpack_bench LAYER DEST` where LAYER is a plain, gzip or zstd tar (told by its
//! magic bytes) and DEST a directory to create (on /dev/shm for numbers that mean something:
//! creating files on / is slow and erratic on the test machines). Build it with `--release`.

use executor::unpack::{Compression, UnpackOptions, unpack_stream};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(layer), Some(dest)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: unpack_bench LAYER DEST");
    };
    let (layer, dest) = (PathBuf::from(layer), PathBuf::from(dest));
    let mut magic = [0u8; 4];
    File::open(&layer)?.read_exact(&mut magic)?;
    let compression = match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    };
    std::fs::create_dir_all(&dest)?;
    let start = Instant::now();
    let stats = unpack_stream(
        File::open(&layer)?,
        compression,
        &dest,
        &UnpackOptions::default(),
    )?;
    println!(
        "{} entries, {} MiB in {:.3}s",
        stats.entries,
        stats.bytes >> 20,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
