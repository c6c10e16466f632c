#!/usr/bin/env bash
# perf-net.sh: berth's network performance report (`make perf`).
#
#   1. installs what it needs (hack/install-deps.sh: iperf3, the reference
#      CNI plugins, iproute2, ...; idempotent),
#   2. builds berth-cni into $BERTH_BIN (default _output/bin/berth),
#   3. builds and runs test/perf/netperf, which writes net.json, net.md,
#      net.svg and net-cni.svg under $OUT (default test/perf/results).
#
# Extra arguments go to netperf, e.g.:  hack/perf-net.sh --quick
# (go run ./test/perf/netperf --help lists them). Must run as root.
# Environment: BERTH_BIN, OUT, SKIP_DEPS=1 (do not run install-deps.sh).
#
# A missed performance target never fails this script. It exits non-zero
# only when it cannot run, a reference/baseline case fails, or berth-cni
# does not build (the report is still written, with berth's cases skipped).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
cd "$REPO_ROOT"

log() { printf '[perf-net] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	log "must run as root (network namespaces, CNI plugins)"
	exit 1
fi

if [ "${SKIP_DEPS:-0}" != 1 ]; then
	bash "$here/install-deps.sh"
fi
for tool in go iperf3 ip; do
	command -v "$tool" >/dev/null || { log "$tool not found after install-deps.sh"; exit 1; }
done

BERTH_BIN=${BERTH_BIN:-_output/bin/berth}
OUT=${OUT:-test/perf/results}
PERF_BIN=_output/perf
mkdir -p "$(dirname "$BERTH_BIN")" "$PERF_BIN" "$OUT"

# Build berth-cni beside its final name and move it into place only when the
# build succeeds, so a failed build can never leave a stale binary to be
# measured as if it were current.
build_args=()
build_log=$(mktemp)
trap 'rm -f "$build_log" "$BERTH_BIN.tmp.$$"' EXIT
log "building berth-cni -> $BERTH_BIN"
if CGO_ENABLED=0 go build -trimpath -o "$BERTH_BIN.tmp.$$" ./cmd/berth-cni >"$build_log" 2>&1; then
	mv -f "$BERTH_BIN.tmp.$$" "$BERTH_BIN"
else
	log "berth-cni does not build; its cases will be reported as skipped:"
	sed 's/^/    /' "$build_log" >&2
	build_args=(--berth-build-error "$(head -c 1500 "$build_log")")
fi

log "building netperf"
go build -o "$PERF_BIN/netperf" ./test/perf/netperf

log "running: netperf --berth-bin $BERTH_BIN --out $OUT $*"
# exec: SIGINT/SIGTERM go straight to netperf, which removes every bperf-*
# namespace it made before exiting.
rm -f "$build_log"
trap - EXIT
exec "$PERF_BIN/netperf" --berth-bin "$BERTH_BIN" --out "$OUT" ${build_args[@]+"${build_args[@]}"} "$@"
