#!/usr/bin/env bash
# Builds the Argo Workflow runner image into an OCI image layout, reproducibly:
# the same sources (same commit, same Cargo.lock, same toolchain) give the same
# image digest.
#
#   bundles/argo-runner/build.sh LAYOUT_DIR [TAG]     # prints the manifest digest
#
# PROFILE=dev builds an unoptimised runner (quicker, for trying the recipe out);
# the published image uses the default, release.
#
# The runner is linked statically (glibc with crt-static), so the image holds
# nothing but /argo-runner. Push it with skopeo, for example:
#   skopeo copy --dest-tls-verify=false oci:LAYOUT_DIR:TAG docker://127.0.0.1:5000/argo-runner:TAG
set -euo pipefail

layout=${1:?usage: build.sh LAYOUT_DIR [TAG]}
tag=${2:-latest}
root=$(cd "$(dirname "$0")/../.." && pwd)
target=x86_64-unknown-linux-gnu
cd "$root"

# Reproducibility: a fixed timestamp for the image (the commit's time), no
# build paths in the binary, no symbols.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$root=/src --remap-path-prefix=$cargo_home=/cargo"
export CARGO_PROFILE_RELEASE_STRIP=symbols

# With an explicit --target, RUSTFLAGS apply to the runner only, not to build
# scripts, and the output lands apart from the ordinary target/ builds.
profile=${PROFILE:-release}
cargo build --locked --profile "$profile" --target "$target" -p argo-runner
case $profile in
    dev) binary=target/$target/debug/argo-runner ;;
    *) binary=target/$target/$profile/argo-runner ;;
esac

# A dynamically linked binary would not start in an image without libc. (ldd
# cannot tell: it calls a static-pie binary "statically linked" and succeeds.)
if readelf --dynamic "$binary" | grep -q NEEDED; then
    echo "build.sh: $binary is dynamically linked; refusing to pack it" >&2
    exit 1
fi

executor=${EXECUTOR:-}
if [ -z "$executor" ]; then
    # A host build: without the runner's static-linking flags (proc-macros cannot link statically).
    env -u RUSTFLAGS cargo build --locked -p executor
    executor=target/debug/executor
fi
# kube's TLS client refuses to start without CA roots when the kubeconfig names no CA
# (plain HTTP included): the image carries the host's bundle (Debian
# ca-certificates; the digest follows that package's version).
"$executor" pack --layout "$layout" --tag "$tag" \
    --add "$binary:/argo-runner" \
    --add /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt \
    --entrypoint /argo-runner
