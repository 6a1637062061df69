#!/usr/bin/env bash
# Installs the real parts the tests and the demo use: OCI runtimes, a registry,
# image tools, a static busybox for test images, and libseccomp for the embedded
# runtime (youki's libcontainer links it), from Debian; and the youki CLI, from
# crates.io. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    runc crun docker-registry skopeo umoci busybox-static \
    libseccomp-dev pkg-config cmake apache2-utils openssl ca-certificates iproute2 procps

# youki has no Debian package: build its CLI from crates.io (about two minutes on
# two cores), with cgroup v1 support for hybrid hosts like this one. The version
# matches the libcontainer the embedded runtime links. Skipped when present.
if ! command -v youki >/dev/null || ! youki --version | grep -q '^youki version: 0\.7\.0$'; then
    cargo install youki --version 0.7.0 --locked --features v1 --root /usr/local
fi
