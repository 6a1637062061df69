#!/usr/bin/env bash
# Installs the real parts the tests and the demo use: OCI runtimes, a registry,
# image tools, a static busybox for test images, and libseccomp for the embedded
# runtime (youki's libcontainer links it), from Debian; and the youki CLI, from
# crates.io; Moby's default seccomp profile for a comparison test; cosign for the
# signature tests. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# cosign (signature tests) is packaged from trixie on: add trixie at pin priority 100,
# so that nothing else of this bookworm machine is taken from it, and take cosign (one
# Go binary needing only libc) from there.
if ! command -v cosign >/dev/null; then
    cat >/etc/apt/sources.list.d/trixie-cosign.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    cat >/etc/apt/preferences.d/trixie-cosign <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
fi
apt-get update
if ! command -v cosign >/dev/null; then
    apt-get install -y --no-install-recommends cosign/trixie
fi
apt-get install -y --no-install-recommends \
    runc crun docker-registry skopeo umoci busybox-static \
    libseccomp-dev pkg-config cmake apache2-utils openssl ca-certificates iproute2 procps \
    gcc libc6-dev

# youki has no Debian package: build its CLI from crates.io (about two minutes on
# two cores), with cgroup v1 support for hybrid hosts like this one, and seccomp: the
# crate has no default features, and a youki built without `seccomp` runs containers
# with no filter at all, silently. The version matches the libcontainer the embedded
# runtime links. Skipped when this script built it before (`youki features` cannot tell:
# it prints `"seccomp": null` either way).
YOUKI_BUILT=/usr/local/share/executor-tests/youki-0.7.0-v1-v2-seccomp
if ! command -v youki >/dev/null || [ ! -e "$YOUKI_BUILT" ]; then
    cargo install youki --version 0.7.0 --locked --force --features v1,v2,seccomp --root /usr/local
    install -D -m 0644 /dev/null "$YOUKI_BUILT"
fi

# Moby's default seccomp profile, the upstream file the built-in profile follows (a test
# compares them): that one file of Debian's golang-github-docker-docker-dev, without the
# 260 Go source packages installing it would pull in.
MOBY_PROFILE=/usr/local/share/executor-tests/moby-seccomp-default.json
if [ ! -s "$MOBY_PROFILE" ]; then
    deb=$(mktemp -d)
    chmod 755 "$deb" # apt-get download drops root to _apt for the download
    (cd "$deb" && apt-get download golang-github-docker-docker-dev)
    dpkg-deb -x "$deb"/golang-github-docker-docker-dev_*.deb "$deb/x"
    install -D -m 0644 \
        "$deb/x/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json" \
        "$MOBY_PROFILE"
    rm -rf "$deb"
fi
