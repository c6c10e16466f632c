#!/usr/bin/env bash
# perf-dataplane.sh: berth's eBPF dataplane performance report.
#
#   1. installs what it needs (hack/install-deps.sh: iperf3, the reference
#      CNI plugins, iproute2, ...; idempotent),
#   2. builds berth-cni into $BERTH_BIN (default _output/bin/berth),
#   3. builds and runs test/perf/dataplane, which writes dataplane.json,
#      dataplane.md and dataplane-*.svg under $OUT (default
#      test/perf/results): shaping accuracy, first-second overshoot and
#      latency under load against the reference bandwidth plugin, the
#      throughput cost of the isolation programs, and CNI ADD latency.
#
# Extra arguments go to the suite, e.g.:  hack/perf-dataplane.sh --quick
# (go run ./test/perf/dataplane --help lists them). Must run as root.
# Environment: BERTH_BIN, OUT, SKIP_DEPS=1 (do not run install-deps.sh).
#
# A missed performance target never fails this script. It exits non-zero
# only when it cannot run, a reference case fails, or berth-cni does not
# build (the report is still written, with berth's cases skipped).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[perf-dataplane] %s\n' "$*" >&2; }
# shellcheck source=perf-common.sh
. "$here/perf-common.sh"

perf_setup
perf_build_berth
perf_build_suite dataplane

log "running: dataplane --berth-bin $BERTH_BIN --out $OUT $*"
# exec: SIGINT/SIGTERM go straight to the suite, which removes every bpdp-*
# namespace and its bpffs directory before exiting.
exec "$PERF_BIN/dataplane" --berth-bin "$BERTH_BIN" --out "$OUT" ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"} "$@"
