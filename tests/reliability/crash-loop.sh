#!/usr/bin/env bash
# kill -9 of the executor at random points of pull, bundle (unpack) and run, 50 times,
# each followed by executor gc and the checks of tests/tests/reliability_crash.rs. Needs
# root (overlay mounts, cgroups), runc, docker-registry and skopeo, like the rest of the
# suite. CRASH_SEED=N replays a run; CRASH_RUNTIMES=runc,embedded picks the runtimes
# for the run phase (empty: no run phase).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -p integration-tests --test reliability_crash -- --ignored --nocapture crash_loop_50
