#!/usr/bin/env bash
# Benchmarks of issues 7 and 16: the executor side by side with runc, podman, containerd
# (ctr), skopeo+umoci+runc, GNU tar and curl, in the same run, on the same file system (/dev/shm: a tmpfs; creating
# files on / is slow and erratic on the test machines). Prints ratios, never absolute times
# alone. See BENCHMARKS.md for what it measures and the results.
#
# Usage (as root, after the README's set-up):  tests/bench/run.sh
# Knobs (environment): ROUNDS (warm, unpack and pull rounds, 10), COLD_ROUNDS (5), BIG_MB (200),
# SMALL_FILES (20000), CONCURRENT (16), BENCH_DIR (/dev/shm/executor-bench),
# CASES ("1 2 3 4 6": which cases to run; 5 comes with 2), KEEP=1 keeps BENCH_DIR.
#
# Commands of each case are interleaved round by round (A B C, A B C, ...) and compared by
# their medians, so that load from other users of the machine hits them alike.
set -euo pipefail

ROUNDS=${ROUNDS:-10}
COLD_ROUNDS=${COLD_ROUNDS:-5}
BIG_MB=${BIG_MB:-200}
SMALL_FILES=${SMALL_FILES:-20000}
CONCURRENT=${CONCURRENT:-16}
CASES=" ${CASES:-1 2 3 4 6} "
want() { [[ $CASES == *" $1 "* ]]; }
W=${BENCH_DIR:-/dev/shm/executor-bench}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
EXE=$TARGET/release/executor
UNPACK=$TARGET/release/examples/unpack_bench

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (runc, overlayfs, podman)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- set-up
install_deps() {
    local missing=()
    for tool in podman:podman hyperfine:hyperfine runc:runc skopeo:skopeo umoci:umoci \
        containerd:containerd ctr:containerd \
        docker-registry:docker-registry curl:curl jq:jq /usr/bin/time:time \
        /bin/busybox:busybox-static; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
    done
    [ ${#missing[@]} = 0 ] && return
    log "installing ${missing[*]}"
    # Some images of Debian carry dpkg stat overrides for groups that were removed
    # (ssl-cert, messagebus); dpkg then refuses to install anything. Recreate them.
    dpkg-statoverride --list 2>/dev/null | while read -r _ group _ _; do
        getent group "$group" >/dev/null || groupadd -r "$group"
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
}
install_deps

log "building the executor (release)"
(cd "$REPO" && cargo build --release -p executor --bin executor --example unpack_bench >&2)

cleanup() {
    set +e
    [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null && wait "$REGISTRY_PID" 2>/dev/null
    stop_containerd
    for id in $(runc --root "$W/runc" list -q 2>/dev/null); do
        runc --root "$W/runc" delete -f "$id" >/dev/null 2>&1
    done
    "${PODMAN[@]}" rm -af >/dev/null 2>&1
    # Deepest first: bundles, podman's overlays, the executor's snapshots.
    awk -v w="$W" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
# containerd as a contender: its own root, state and sockets under $W (a tmpfs), the CRI
# plugin off (no Kubernetes here), started and stopped by this script.
CTRD=$W/containerd
CTR=(ctr --address "$CTRD/containerd.sock" --namespace bench)
start_containerd() {
    mkdir -p "$CTRD"
    cat >"$CTRD/config.toml" <<EOF
version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[debug]
  address = "$CTRD/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
EOF
    containerd --config "$CTRD/config.toml" --root "$CTRD/root" --state "$CTRD/state" \
        --address "$CTRD/containerd.sock" >>"$CTRD/log" 2>&1 &
    CONTAINERD_PID=$!
    for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && return; sleep 0.1; done
    die "containerd did not start: $(tail -5 "$CTRD/log")"
}
stop_containerd() {
    [ -n "${CONTAINERD_PID:-}" ] || return 0
    kill "$CONTAINERD_PID" 2>/dev/null && wait "$CONTAINERD_PID" 2>/dev/null
    CONTAINERD_PID=
}
# An empty containerd (no content, no snapshots) for a cold round; untimed.
fresh_containerd() {
    stop_containerd
    awk -v d="$CTRD" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    rm -rf "$CTRD/root" "$CTRD/state"
    start_containerd
}
PODMAN=(podman --root "$W/podman/root" --runroot "$W/podman/run" --runtime runc
    --cgroup-manager cgroupfs --events-backend file --storage-driver overlay
    --tmpdir "$W/podman/tmp")
[ -e "$W" ] && cleanup
mkdir -p "$W"/{tmp,images,runc,podman/tmp}
trap cleanup EXIT
export TMPDIR=$W/tmp # skopeo's and podman's temp files on the same file system

# ---------------------------------------------------------------- images
# make_layer DIR NAME: a gzip layer of DIR's tree into $W/images/blobs; prints "digest size diffid".
make_layer() {
    local dir=$1 name=$2 blobs=$W/images/blobs/sha256
    mkdir -p "$blobs"
    tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$dir" -cf "$W/images/$name.tar" .
    local diff_id
    diff_id=$(sha256sum "$W/images/$name.tar" | cut -d' ' -f1)
    gzip -n -1 -c "$W/images/$name.tar" >"$W/images/$name.tar.gz"
    local digest
    digest=$(sha256sum "$W/images/$name.tar.gz" | cut -d' ' -f1)
    cp "$W/images/$name.tar.gz" "$blobs/$digest"
    echo "$digest $(stat -c %s "$W/images/$name.tar.gz") $diff_id"
}

# put_json JSON: stores a JSON blob; prints "digest size".
put_json() {
    local file=$W/images/json.tmp digest
    printf '%s' "$1" >"$file"
    digest=$(sha256sum "$file" | cut -d' ' -f1)
    mv "$file" "$W/images/blobs/sha256/$digest"
    echo "$digest $(stat -c %s "$W/images/blobs/sha256/$digest")"
}

# make_image TAG LAYER_LINE...: an image whose runner is /bin/true, tagged in the layout.
make_image() {
    local tag=$1
    shift
    local layers="" diff_ids="" line d s i
    for line in "$@"; do
        read -r d s i <<<"$line"
        layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$s}"
        diff_ids+="${diff_ids:+,}\"sha256:$i\""
    done
    read -r d s <<<"$(put_json "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[\"/bin/true\"],\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]}}")"
    read -r d s <<<"$(put_json "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$d\",\"size\":$s},\"layers\":[$layers]}")"
    local index=$W/images/index.json entry
    entry="{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$d\",\"size\":$s,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$tag\"}}"
    [ -f "$index" ] || echo '{"schemaVersion":2,"manifests":[]}' >"$index"
    jq -c --argjson e "$entry" '.manifests += [$e]' "$index" >"$index.new" && mv "$index.new" "$index"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$W/images/oci-layout"
}

log "building images: busybox (runner: static true), large (${BIG_MB} MB random + ${SMALL_FILES} small files)"
mkdir -p "$W/src/base/bin" "$W/src/big" "$W/src/small"
cp /bin/busybox "$W/src/base/bin/busybox"
for applet in true sh; do ln -sf busybox "$W/src/base/bin/$applet"; done
mkdir -p "$W/src/base/"{etc,tmp,proc,dev,sys}
head -c "$((BIG_MB << 20))" /dev/urandom >"$W/src/big/random.bin"
# 20,000 small files of 1-4 KiB in 200 directories.
python3 - "$W/src/small" "$SMALL_FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 200))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(os.urandom(1024 * (1 + i % 4)))
EOF
BASE=$(make_layer "$W/src/base" base)
BIG=$(make_layer "$W/src/big" big)
SMALL=$(make_layer "$W/src/small" small)
make_image small "$BASE"
make_image large "$BASE" "$BIG" "$SMALL"
rm -rf "$W/src"

# ---------------------------------------------------------------- registry
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $W/registry/storage
  delete:
    enabled: true
http:
  addr: $REG
  secret: bench
EOF
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://$REG/v2/" >/dev/null || die "registry did not start: $(cat "$W/registry/log")"
for tag in small large; do
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false \
        "oci:$W/images:$tag" "docker://$REG/bench/$tag:v1"
done
export EXECUTOR_INSECURE_REGISTRIES=$REG
SMALL_IMG=$REG/bench/small:v1
LARGE_IMG=$REG/bench/large:v1
start_containerd

# ---------------------------------------------------------------- timing
declare -A MED   # label -> median seconds
declare -A NOTE  # label -> remark
now() { date +%s%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# interleave ROUNDS LABEL... : runs the function bench_LABEL (with the round number) once per
# round for every label, in turn, timing each; between runs, prep_LABEL (untimed) if defined.
interleave() {
    local rounds=$1 label r t0 t1
    shift
    declare -A samples=()
    for r in $(seq "$rounds"); do
        for label in "$@"; do
            if declare -F "prep_$label" >/dev/null; then "prep_$label" "$r"; fi
            t0=$(now)
            "bench_$label" "$r" >/dev/null 2>>"$W/bench.err" || die "$label failed (round $r): $(tail -5 "$W/bench.err")"
            t1=$(now)
            samples[$label]+="$(( (t1 - t0) / 1000 )) "
        done
    done
    for label in "$@"; do
        MED[$label]=$(tr ' ' '\n' <<<"${samples[$label]}" | grep . | median | awk '{printf "%.4f", $1/1e6}')
        log "$label: median ${MED[$label]} s (${samples[$label]% }us)"
    done
}

ratio() { awk -v a="${MED[$1]}" -v b="${MED[$2]}" 'BEGIN {printf "%.2f", a/b}'; }

CTX=$W/context.yaml ARGS=$W/args.yaml
printf 'name: bench\ndryRun: false\ntimeout: 0s\nplatform:\n  namespace: default\n  serviceAccountName: default\n  ownerRef: {apiVersion: v1, kind: Pod, name: x, uid: "1", controller: true, blockOwnerDeletion: true}\n' >"$CTX"
echo '{}' >"$ARGS"
RUN_ARGS=(--network none --context "$CTX" --args "$ARGS")

# Does this build's `executor run` take an image? (It arrived with the run issue.)
RUN_IMAGES=0
if "$EXE" --root "$W/probe" run --help 2>/dev/null | grep -q -- '--pull'; then
    mkdir -p "$W/probe"
    if "$EXE" --root "$W/probe" run "oci-layout:$W/images:small" --runtime runc --network none \
        --context "$CTX" --args "$ARGS" \
        >/dev/null 2>"$W/probe.err"; then
        RUN_IMAGES=1
    fi
    rm -rf "$W/probe"
fi
[ $RUN_IMAGES = 1 ] || log "this build's 'executor run' cannot run images: warm 'executor run' cases skipped, cold cases use pull+bundle+runc"


# CPU time (user + system) of each side and of the registry serving it, in untimed
# rounds: with two cores, (executor + registry CPU) / cores bounds the pull's wall time.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$REGISTRY_PID/stat"; }
# CPU (user + system, ms) of this shell's waited-for children so far, into CHILDREN_MS:
# `times` in this shell (a subshell counts its own children only), parsed without
# starting a process that would count too.
children_cpu() {
    local user sys
    times >"$W/times"
    { read -r _; read -r user sys; } <"$W/times"
    CHILDREN_MS=$(( $(ms_of "$user") + $(ms_of "$sys") ))
}
ms_of() { # 1m2.345s -> 62345
    local m=${1%%m*} s=${1#*m}
    s=${s%s}
    echo $(( (10#$m * 60 + 10#${s%.*}) * 1000 + 10#${s#*.} ))
}
cpu_of() {
    local label=$1 r before reg_before
    local -a own=() reg=()
    for r in 1 2 3; do
        "prep_$label" "$r"
        reg_before=$(cpu_ticks)
        children_cpu
        before=$CHILDREN_MS
        "bench_$label" "$r" >/dev/null 2>>"$W/bench.err" || die "$label failed (CPU round $r)"
        children_cpu
        own+=("$(( CHILDREN_MS - before ))")
        reg+=("$(( ($(cpu_ticks) - reg_before) * 1000 / CLK_TCK ))")
    done
    CPU[$label]=$(printf '%s\n' "${own[@]}" | sort -n | sed -n 2p)
    CPU[reg_$label]=$(printf '%s\n' "${reg[@]}" | sort -n | sed -n 2p)
    log "$label: CPU ${CPU[$label]} ms, registry ${CPU[reg_$label]} ms (medians of 3)"
}
declare -A CPU
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- case 1: warm start
if want 1; then
log "case 1: warm start (${ROUNDS} rounds)"
WR=$W/warm-root
"$EXE" --root "$WR" pull "$SMALL_IMG" >/dev/null 2>&1
"$EXE" --root "$WR" bundle "$SMALL_IMG" --context "$CTX" --args "$ARGS" -o "$W/warm-bundle" >/dev/null 2>&1
"${PODMAN[@]}" pull -q --tls-verify=false "$SMALL_IMG" >/dev/null
"${CTR[@]}" image pull --plain-http "$SMALL_IMG" >/dev/null
bench_ctr_run() { "${CTR[@]}" run --rm "$SMALL_IMG" "warm-$1"; }
bench_runc() { runc --root "$W/runc" run --bundle "$W/warm-bundle" "warm-$1"; }
bench_podman() {
    "${PODMAN[@]}" run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$SMALL_IMG"
}
bench_exec_embedded() { "$EXE" --root "$WR" run "$SMALL_IMG" --pull never "${RUN_ARGS[@]}"; }
bench_exec_runc() { "$EXE" --root "$WR" run "$SMALL_IMG" --pull never "${RUN_ARGS[@]}" --runtime runc; }
# Without `executor run`: what the executor adds to a warm start, measured with its CLI:
# bundle an already unpacked image (overlay mount, config.json, inputs), runc run, clean up.
bench_bundle_runc() {
    "$EXE" --root "$WR" --log-level warn bundle "$SMALL_IMG" --context "$CTX" --args "$ARGS" -o "$W/wb-$1" &&
        runc --root "$W/runc" run --bundle "$W/wb-$1" "wb-$1" &&
        umount "$W/wb-$1/rootfs" && rm -rf "$W/wb-$1"
}
# The floor of `--runtime runc`: the OCI lifecycle (create, start, delete) is two runc
# processes more than `runc run`; one short runc process, less what timing itself costs.
bench_runc_proc() { runc --root "$W/runc" list; }
bench_noop() { :; }
if [ $RUN_IMAGES = 1 ]; then
    interleave "$ROUNDS" runc exec_embedded exec_runc podman ctr_run runc_proc noop
else
    interleave "$ROUNDS" runc bundle_runc podman ctr_run
fi
fi

# ---------------------------------------------------------------- case 2 + 5: cold large image
if want 2; then
log "case 2: cold start of the large image (${COLD_ROUNDS} rounds)"
prep_cold_exec() { rm -rf "$W/cold-root"; }
if [ $RUN_IMAGES = 1 ]; then
    bench_cold_exec() {
        /usr/bin/time -f '%M' -o "$W/rss.$1" \
            "$EXE" --root "$W/cold-root" run "$LARGE_IMG" "${RUN_ARGS[@]}" --runtime runc
    }
else
    bench_cold_exec() {
        # pull and bundle are the executor; runc run is what `executor run --runtime runc` adds.
        /usr/bin/time -f '%M' -o "$W/rss.$1" "$EXE" --root "$W/cold-root" pull "$LARGE_IMG" &&
            /usr/bin/time -f '%M' -a -o "$W/rss.$1" "$EXE" --root "$W/cold-root" bundle "$LARGE_IMG" \
                --context "$CTX" --args "$ARGS" -o "$W/cold-bundle" &&
            runc --root "$W/runc" run --bundle "$W/cold-bundle" "cold-$1" &&
            umount "$W/cold-bundle/rootfs" && rm -rf "$W/cold-bundle"
    }
fi
prep_cold_skopeo() { rm -rf "$W/sk" "$W/sk-bundle"; }
bench_cold_skopeo() {
    skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$LARGE_IMG" "oci:$W/sk:large" &&
        umoci unpack --image "$W/sk:large" "$W/sk-bundle" &&
        jq '.process.terminal = false' "$W/sk-bundle/config.json" >"$W/sk-bundle/c.json" &&
        mv "$W/sk-bundle/c.json" "$W/sk-bundle/config.json" &&
        runc --root "$W/runc" run --bundle "$W/sk-bundle" "sk-$1"
}
prep_cold_podman() { "${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true; }
bench_cold_podman() {
    "${PODMAN[@]}" pull -q --tls-verify=false "$LARGE_IMG" &&
        "${PODMAN[@]}" run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$LARGE_IMG"
}
prep_cold_ctr() { fresh_containerd; }
bench_cold_ctr() {
    "${CTR[@]}" image pull --plain-http "$LARGE_IMG" && "${CTR[@]}" run --rm "$LARGE_IMG" "cold-$1"
}
interleave "$COLD_ROUNDS" cold_exec cold_skopeo cold_podman cold_ctr
PEAK_KB=$(cat "$W"/rss.* | sort -n | tail -1)
# Pull and unpack at once are CPU work on every core: their CPU bounds the cold wall.
cpu_of cold_exec
fi

# ---------------------------------------------------------------- case 3: unpack alone
if want 3; then
log "case 3: unpack alone vs tar -xzf (${ROUNDS} rounds, each layer of the large image)"
prep_unpack_exec() { rm -rf "$W/un"; mkdir -p "$W/un"; }
bench_unpack_exec() {
    for l in base big small; do "$UNPACK" "$W/images/$l.tar.gz" "$W/un/$l"; done
}
prep_unpack_tar() { rm -rf "$W/ut"; mkdir -p "$W/ut"/{base,big,small}; }
bench_unpack_tar() {
    for l in base big small; do tar --same-owner -p -xzf "$W/images/$l.tar.gz" -C "$W/ut/$l"; done
}
interleave "$ROUNDS" unpack_exec unpack_tar
rm -rf "$W/un" "$W/ut"
fi

# ---------------------------------------------------------------- case 4: pull alone
if want 4; then
log "case 4: pull alone vs parallel curl of the same blobs (${ROUNDS} rounds)"
BLOBS=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REG/v2/bench/large/manifests/v1" | jq -r '.config.digest, .layers[].digest')
prep_pull_exec() { rm -rf "$W/pull-root"; }
bench_pull_exec() { "$EXE" --root "$W/pull-root" pull "$LARGE_IMG"; }
prep_pull_curl() { rm -rf "$W/curl"; mkdir -p "$W/curl"; }
bench_pull_curl() {
    local d pids=()
    for d in $BLOBS; do
        curl -sf -o "$W/curl/${d#sha256:}" "http://$REG/v2/bench/large/blobs/$d" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}
prep_pull_ctr() { fresh_containerd; }
bench_pull_ctr() { "${CTR[@]}" content fetch --plain-http "$LARGE_IMG"; }
interleave "$ROUNDS" pull_exec pull_curl pull_ctr
cpu_of pull_exec
cpu_of pull_curl
rm -rf "$W/pull-root" "$W/curl"
fi

# ---------------------------------------------------------------- case 6: concurrent cold runs
if want 6; then
log "case 6: ${CONCURRENT} concurrent cold runs of the large image from one empty store"
rm -rf "$W/conc-root"
: >"$W/registry/log.before"
cp "$W/registry/log" "$W/registry/log.before"
one_conc() {
    if [ $RUN_IMAGES = 1 ]; then
        "$EXE" --root "$W/conc-root" run "$LARGE_IMG" "${RUN_ARGS[@]}" --runtime runc
    else
        "$EXE" --root "$W/conc-root" pull "$LARGE_IMG" &&
            "$EXE" --root "$W/conc-root" bundle "$LARGE_IMG" --context "$CTX" --args "$ARGS" -o "$W/conc-bundle-$1" &&
            runc --root "$W/runc" run --bundle "$W/conc-bundle-$1" "conc-$1"
    fi
}
t0=$(now)
pids=()
for i in $(seq "$CONCURRENT"); do
    one_conc "$i" >/dev/null 2>>"$W/conc.err" &
    pids+=($!)
done
FAILED=0
for p in "${pids[@]}"; do wait "$p" || FAILED=$((FAILED + 1)); done
t1=$(now)
MED[concurrent]=$(awk -v n=$(( (t1 - t0) / 1000 )) 'BEGIN {printf "%.4f", n/1e6}')
for i in $(seq "$CONCURRENT"); do
    [ -d "$W/conc-bundle-$i" ] && { umount "$W/conc-bundle-$i/rootfs" 2>/dev/null; rm -rf "$W/conc-bundle-$i"; }
done
# Blob GETs that returned content (200 or 206) during the concurrent runs, per digest.
FETCHES=$(tail -n +"$(( $(wc -l <"$W/registry/log.before") + 1 ))" "$W/registry/log" |
    grep -oE '"GET /v2/bench/large/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+" 20[06]' |
    grep -oE 'sha256:[0-9a-f]+' | sort | uniq -c | awk '{print $1}' | sort -n | uniq | tr '\n' ' ')
log "concurrent: ${MED[concurrent]} s, ${FAILED} failed, fetches per blob: ${FETCHES}"
fi

# ---------------------------------------------------------------- report
row() { printf '| %-58s | %9s | %-22s | %-4s |\n' "$1" "$2" "$3" "$4"; }
met() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {print ((op == "<=" ? v <= t : v >= t) ? "yes" : "NO")}'; }
echo
echo "Benchmarks on $(uname -r), $(nproc) cores, file system: $(df -T "$W" | awk 'NR==2 {print $2}') at $W"
echo "executor $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null), release build; medians of interleaved rounds"
echo "load average at the start: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other users of the machine add noise)"
echo
row "case" "ratio" "target" "met"
row "---" "---" "---" "---"
if want 1 && [ $RUN_IMAGES = 1 ]; then
    r=$(ratio exec_embedded runc); row "1 warm: executor run (embedded) / runc run of a bundle" "$r" "<= 1.25" "$(met "$r" "<=" 1.25)"
    r=$(ratio exec_runc runc); row "1 warm: executor run --runtime runc / runc run" "$r" "<= 1.25" "$(met "$r" "<=" 1.25)"
    r=$(ratio exec_embedded podman); row "1 warm: executor run (embedded) / podman run" "$r" "<= 0.25" "$(met "$r" "<=" 0.25)"
    r=$(ratio ctr_run exec_embedded); row "1 warm: ctr run --rm / executor run (embedded) (speed-up)" "$r" "(no target)" "-"
    r=$(ratio ctr_run exec_runc); row "1 warm: ctr run --rm / executor run --runtime runc (speed-up)" "$r" "(no target)" "-"
    r=$(awk -v r="${MED[runc]}" -v p="${MED[runc_proc]}" -v n="${MED[noop]}" 'BEGIN {printf "%.2f", (r + 2 * (p - n)) / r}')
    row "1 floor of --runtime runc: (runc run + 2 runc) / runc run" "$r" "(a bound)" "-"
elif want 1; then
    row "1 warm: executor run (needs the run issue)" "n/a" "<= 1.25 runc" "n/a"
    r=$(ratio bundle_runc runc); row "1 warm proxy: executor bundle + runc run / runc run" "$r" "(<= 1.25)" "$(met "$r" "<=" 1.25)"
    r=$(ratio runc podman); row "1 warm: runc run of a bundle / podman run (reference)" "$r" "(no target)" "-"
fi
if want 2; then
    r=$(ratio cold_skopeo cold_exec); row "2 cold large: skopeo+umoci+runc / executor (speed-up)" "$r" ">= 8" "$(met "$r" ">=" 8)"
    r=$(ratio cold_ctr cold_exec); row "2 cold large: ctr pull + ctr run / executor (speed-up)" "$r" ">= 1.5" "$(met "$r" ">=" 1.5)"
    r=$(ratio cold_podman cold_exec); row "2 cold large: podman pull+run / executor (speed-up)" "$r" "> 1" "$(met "$r" ">=" 1.0001)"
    mib=$(awk -v k="$PEAK_KB" 'BEGIN {printf "%.1f", k/1024}')
    row "5 peak RSS of the executor in case 2 (MiB)" "$mib" "<= 64" "$(met "$mib" "<=" 64)"
fi
if want 3; then
    r=$(ratio unpack_exec unpack_tar); row "3 unpack: executor / tar -xzf" "$r" "<= 1.25" "$(met "$r" "<=" 1.25)"
fi
if want 4; then
    r=$(ratio pull_curl pull_exec); row "4 pull: throughput executor / parallel curl" "$r" ">= 0.8" "$(met "$r" ">=" 0.8)"
    r=$(awk -v c="${MED[pull_curl]}" -v e="${CPU[pull_exec]}" -v g="${CPU[reg_pull_exec]}" -v n="$(nproc)" \
        'BEGIN {printf "%.2f", c * 1000 / ((e + g) / n)}')
    row "4 pull: best ratio the CPU allows (all cores busy)" "$r" "(a bound)" "-"
    r=$(ratio pull_ctr pull_exec); row "4 pull: ctr content fetch / executor pull (speed-up)" "$r" "(no target)" "-"
fi
if want 2 && want 3 && want 4; then
    # Unpack while fetching: the cold run against the slower of its two halves alone.
    r=$(awk -v c="${MED[cold_exec]}" -v f="${MED[pull_exec]}" -v u="${MED[unpack_exec]}" \
        'BEGIN {m = f > u ? f : u; printf "%.2f", c / m}')
    row "2 cold wall / max(pull alone, unpack alone)" "$r" "<= 1.15" "$(met "$r" "<=" 1.15)"
    r=$(awk -v c="${MED[cold_exec]}" -v f="${MED[pull_exec]}" -v u="${MED[unpack_exec]}" \
        'BEGIN {printf "%.2f", c / (f + u)}')
    row "2 cold wall / (pull alone + unpack alone)" "$r" "(1.0 = no overlap)" "-"
fi
if want 2; then
    r=$(awk -v c="${MED[cold_exec]}" -v e="${CPU[cold_exec]}" -v g="${CPU[reg_cold_exec]}" -v n="$(nproc)" \
        'BEGIN {printf "%.2f", c / ((e + g) / 1000 / n)}')
    row "2 cold wall / its CPU bound ((executor + registry CPU) / cores)" "$r" "(1.0 = every core busy)" "-"
fi
if want 6 && want 2; then
    r=$(ratio concurrent cold_exec); row "6 ${CONCURRENT} concurrent cold / one cold run (wall)" "$r" "<= 2" "$(met "$r" "<=" 2)"
fi
if want 6; then
    once=$([ "$FETCHES" = "1 " ] && echo yes || echo NO)
    row "6 fetches per blob (registry access log)" "${FETCHES% }" "1 each" "$once"
    [ "$FAILED" = 0 ] || row "6 failed concurrent runs" "$FAILED" "0" "NO"
fi
echo
echo "medians (s): $(for k in "${!MED[@]}"; do printf '%s=%s ' "$k" "${MED[$k]}"; done)"
want 4 && echo "pull CPU (ms): executor ${CPU[pull_exec]} + registry ${CPU[reg_pull_exec]}; curl ${CPU[pull_curl]} + registry ${CPU[reg_pull_curl]}"
[ $RUN_IMAGES = 1 ] || echo "note: 'executor' in cases 2 and 6 is executor pull + executor bundle + runc run"
