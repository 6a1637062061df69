#!/usr/bin/env bash
# Builds the sample runner as a static binary and packs it with `executor pack`
# into an OCI image layout: bundles/sample-runner/layout, tag `latest`.
# Reproducible: SOURCE_DATE_EPOCH defaults to the last commit's time, so the same
# sources give the same image digest. Prints the manifest digest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# The host's target triple, named explicitly so that RUSTFLAGS (static glibc)
# apply to the runner only, not to build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet -p sample-runner --target "$triple"
cargo build --quiet -p executor

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
target/debug/executor pack \
    --layout "$here/layout" \
    --tag latest \
    --add "target/$triple/debug/sample-runner:/usr/local/bin/sample-runner" \
    --entrypoint /usr/local/bin/sample-runner \
    --env RUNNER_CONTEXT_PATH=/runner-context \
    --env RUNNER_ARGS_PATH=/runner-args
