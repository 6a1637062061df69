#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: tests/fuzz/run.sh [SECONDS] [TARGET...]
# (default 60 s each, all targets). Seeds each corpus with a few valid inputs first.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the stable toolchain accepts
# its nightly flags with RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=address|none (default none:
# the code is safe Rust plus zlib-ng/zstd, and ASan triples build and run time here).
# Exit status: 0 when no target found a crash; crashes are left in artifacts/TARGET/.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(reference manifest runner_context runner_args unpack)
fi
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

seed() {
    local dir="corpus/$1"
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || return 0
    case "$1" in
    reference)
        printf 'busybox' >"$dir/1"
        printf 'ghcr.io/capactio/runner:v1.2@sha256:%064d' 0 >"$dir/2"
        printf 'localhost:5000/a/b/c:tag' >"$dir/3"
        printf 'oci-layout:/tmp/layout:v1' >"$dir/4"
        printf 'oci-layout:./dir@sha256:%064d' 1 >"$dir/5"
        ;;
    manifest)
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%064d","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%064d","size":3}]}' 0 1 >"$dir/1"
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%064d","size":2,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%064d","size":2,"platform":{"os":"unknown","architecture":"unknown"},"annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}' 0 1 >"$dir/2"
        printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:%064d","size":2,"platform":{"os":"linux","architecture":"amd64"}}]}' 0 >"$dir/3"
        ;;
    runner_context)
        printf 'name: action-1\ndryRun: true\ntimeout: 1h30m\nplatform:\n  namespace: ns\n  serviceAccountName: sa\n  ownerRef:\n    apiVersion: core.capact.io/v1alpha1\n    kind: Action\n    name: action-1\n    uid: 5f1c\n    controller: true\n' >"$dir/1"
        printf '{"name":"a","platform":{"namespace":"n","serviceAccountName":"s","ownerRef":{"apiVersion":"v1","kind":"K","name":"n","uid":"u"}}}' >"$dir/2"
        printf '1.5h2m0.3s' >"$dir/3"
        ;;
    runner_args)
        printf 'workflow:\n  entrypoint: main\n  templates:\n    - name: main\n      container: {image: "alpine:3", args: [a, "b", 1, 2.5, true, null]}\n' >"$dir/1"
        printf '&a [*a]' >"$dir/2"
        printf '%s\n' '--- !tag' 'key: ~' '? complex' ': value' >"$dir/3"
        ;;
    unpack)
        # Selector byte (0 tar, 1 gzip, 2 zstd; +4 path walk) + a layer with a dir, a
        # file, a symlink, a hard link and whiteouts.
        python3 - "$dir" <<'PY'
import gzip, io, sys, tarfile
def layer():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind, data=b"", link=""):
            info = tarfile.TarInfo(name); info.type = kind; info.linkname = link
            info.size = len(data); info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("etc", tarfile.DIRTYPE)
        add("etc/hosts", tarfile.REGTYPE, b"127.0.0.1 localhost\n")
        add("etc/link", tarfile.SYMTYPE, link="../etc/hosts")
        add("etc/hard", tarfile.LNKTYPE, link="etc/hosts")
        add("etc/.wh.gone", tarfile.REGTYPE)
        add("var/.wh..wh..opq", tarfile.REGTYPE)
    return buf.getvalue()
data = layer()
d = sys.argv[1]
open(f"{d}/tar", "wb").write(b"\x00" + data)
open(f"{d}/tar-walk", "wb").write(b"\x04" + data)
open(f"{d}/gzip", "wb").write(b"\x01" + gzip.compress(data))
PY
        if command -v zstd >/dev/null; then
            tail -c +2 "$dir/tar" | zstd -q -c | { printf '\002'; cat; } >"$dir/zstd"
        fi
        ;;
    esac
}

status=0
for target in "${targets[@]}"; do
    seed "$target"
    echo "== $target: ${seconds}s"
    set +e
    cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        tee "/tmp/fuzz-$target.log" |
        grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added|SUMMARY|thread .* panicked|Failing input)'
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "!! $target found a crash (exit $rc): see artifacts/$target/ and /tmp/fuzz-$target.log"
        status=1
    fi
done
exit $status
