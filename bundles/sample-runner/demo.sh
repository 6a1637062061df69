#!/usr/bin/env bash
# The README's first command: build the sample runner image, run it with
# `executor run` from the local OCI layout on the embedded runtime, and show its
# output, its artifacts and its status. Run as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# Build dependencies of the executor on a fresh Debian machine: libseccomp for the
# embedded runtime (youki's libcontainer links it) and cmake for zlib-ng. No OCI
# runtime and no registry are needed: the executor embeds its runtime.
if ! pkg-config --exists libseccomp 2>/dev/null || ! command -v cmake >/dev/null; then
    echo "== installing build dependencies (libseccomp-dev, pkg-config, cmake)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends libseccomp-dev pkg-config cmake >/dev/null
fi

echo "== building the sample runner image"
digest="$("$here/build.sh")"
echo "image: oci-layout:$here/layout:latest ($digest)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "== executor run"
"$root/target/debug/executor" run "oci-layout:$here/layout:latest" \
    --context "$here/context.yaml" \
    --args "$here/args.yaml" \
    --output-dir "$out" \
    --status-reporter stdout
echo "== artifacts in --output-dir"
for f in "$out"/*; do
    echo "--- $(basename "$f")"
    cat "$f"
done
