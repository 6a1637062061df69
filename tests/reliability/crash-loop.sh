#!/usr/bin/env bash
# kill -9 of the executor at random points of pull and bundle (unpack), 50 times, each
# followed by the checks of tests/tests/reliability_crash.rs. Needs root (overlay mounts),
# docker-registry and skopeo, like the rest of the suite. CRASH_SEED=N replays a run.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -p integration-tests --test reliability_crash -- --ignored --nocapture crash_loop_50
