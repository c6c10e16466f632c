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
# hack/perf-dataplane.sh makes the eBPF dataplane report; hack/perf.sh
# runs both.
#
# A missed performance target never fails this script. It exits non-zero
# only when it cannot run, a reference/baseline case fails, or berth-cni
# does not build (the report is still written, with berth's cases skipped).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[perf-net] %s\n' "$*" >&2; }
# shellcheck source=perf-common.sh
. "$here/perf-common.sh"

perf_setup
perf_build_berth
perf_build_suite netperf

log "running: netperf --berth-bin $BERTH_BIN --out $OUT $*"
# exec: SIGINT/SIGTERM go straight to netperf, which removes every bperf-*
# namespace it made before exiting.
exec "$PERF_BIN/netperf" --berth-bin "$BERTH_BIN" --out "$OUT" ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"} "$@"
