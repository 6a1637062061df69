//! Pull progress drawn as one bar per blob on stderr, when it is a terminal.

use executor::pull::{BlobProgress, PullProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci_spec::image::Digest;
use std::io::IsTerminal;
use std::sync::Arc;

/// Bars for [`executor::pull`], or `None` when stderr is not a terminal (logs only).
pub fn bars() -> Option<Arc<dyn PullProgress>> {
    std::io::stderr()
        .is_terminal()
        .then(|| Arc::new(Bars(MultiProgress::new())) as Arc<dyn PullProgress>)
}

#[derive(Debug)]
struct Bars(MultiProgress);

impl PullProgress for Bars {
    fn started(&self, blob: &Digest, size: u64) -> Box<dyn BlobProgress> {
        let bar = self.0.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let hex = blob.digest();
        bar.set_prefix(hex.get(..12).unwrap_or(hex).to_owned());
        Box::new(Bar(bar))
    }
}

struct Bar(ProgressBar);

impl BlobProgress for Bar {
    fn at(&self, written: u64) {
        self.0.set_position(written);
    }

    fn done(&self) {
        self.0.finish();
    }
}
