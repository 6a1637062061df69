#!/usr/bin/env bash
# Installs the real parts the tests and the demo use: OCI runtimes, a registry,
# image tools, a static busybox for test images, and libseccomp for the embedded
# runtime (youki's libcontainer links it). Debian packages only; run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    runc crun docker-registry skopeo umoci busybox-static \
    libseccomp-dev pkg-config cmake apache2-utils openssl ca-certificates iproute2 procps
