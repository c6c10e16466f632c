#!/usr/bin/env bash
# perf-cri.sh: berth-cri's performance report against containerd 2.2's
# built-in CRI (third suite of `make perf`):
#
#   1. installs what it needs (hack/install-deps.sh: the reference CNI
#      plugins, iproute2, ...; hack/install-cri-tools.sh: containerd, runc,
#      crictl, registry under /opt/berth/bin; both idempotent),
#   2. runs test/perf/crilat (BERTH_PERF_CRI=1 go test ...), which builds
#      berth-cri from this tree, starts both runtimes on private containerds
#      of the same build and one CNI conflist, and writes cri.json, cri.md
#      and cri-*.svg under $OUT (default test/perf/results):
#      pod start and stop + remove latency (50 pods sequential, 50 pods 10
#      at a time; p50/p99) and resident memory with 100 pods running.
#
#   hack/perf-cri.sh                 # full report (~4 minutes)
#   hack/perf-cri.sh --quick         # smoke run: 10 pods, 20 for RSS
#   hack/perf-cri.sh --pods 100 --concurrency 20 --rss-pods 150
#
# Environment: OUT, SKIP_DEPS=1 (do not run the install scripts). Must run
# as root. A missed target never fails this script; it exits non-zero only
# when the suite cannot run or berth-cri does not build (the report is then
# still written, with berth-cri marked as not measured).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[perf-cri] %s\n' "$*" >&2; }
# shellcheck source=perf-common.sh
. "$here/perf-common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# Flags become the suite's environment: go test passes no arguments of
# its own to a test.
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) export CRI_PERF_QUICK=1 ;;
	--pods) export CRI_PERF_PODS=${2:?--pods N}; shift ;;
	--concurrency) export CRI_PERF_CONCURRENCY=${2:?--concurrency N}; shift ;;
	--rss-pods) export CRI_PERF_RSS_PODS=${2:?--rss-pods N}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) log "unknown argument $1"; usage >&2; exit 2 ;;
	esac
	shift
done

perf_setup
if [ "${SKIP_DEPS:-0}" != 1 ]; then
	bash "$here/install-cri-tools.sh"
fi
# go test runs in the package directory: the output path must be absolute.
mkdir -p "$OUT"
CRI_PERF_OUT=$(cd "$OUT" && pwd)
export CRI_PERF_OUT BERTH_PERF_CRI=1

log "running: BERTH_PERF_CRI=1 go test -count=1 -v -timeout 60m -run TestCRILatency ./test/perf/crilat/ (out: $CRI_PERF_OUT)"
# exec: a ^C reaches the test binary (same process group), which then
# stops measuring and its cleanups remove every pod, shim, daemon and the
# bridge before it exits.
exec go test -count=1 -v -timeout 60m -run 'TestCRILatency$' ./test/perf/crilat/
