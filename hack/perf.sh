#!/usr/bin/env bash
# perf.sh: every berth performance report, one after the other:
# test/perf/netperf (pod-to-pod throughput, CNI ADD/DEL latency; net.*)
# then test/perf/dataplane (eBPF shaping and isolation; dataplane.*),
# with one dependency install and one berth-cni build.
#
#   hack/perf.sh            # full reports (~15 + ~12 minutes)
#   hack/perf.sh --quick    # smoke runs of both
#
# --quick is the only argument; suite-specific flags go in NETPERF_ARGS and
# DATAPLANE_ARGS (word-split), e.g. DATAPLANE_ARGS="--cases berth-veth".
# Environment: BERTH_BIN, OUT, SKIP_DEPS=1, as for perf-net.sh. Must run as
# root. Exits with the first non-zero status of the two suites (130 at
# once when interrupted); a missed target is never a failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[perf] %s\n' "$*" >&2; }
# shellcheck source=perf-common.sh
. "$here/perf-common.sh"

common=()
for a in "$@"; do
	case "$a" in
	--quick) common+=(--quick) ;;
	*) log "unknown argument $a (suite flags go in NETPERF_ARGS / DATAPLANE_ARGS)"; exit 2 ;;
	esac
done
read -r -a net_args <<<"${NETPERF_ARGS:-}"
read -r -a dp_args <<<"${DATAPLANE_ARGS:-}"

perf_setup
perf_build_berth
perf_build_suite netperf
perf_build_suite dataplane

rc=0
for suite in netperf dataplane; do
	if [ "$suite" = netperf ]; then extra=(${net_args[@]+"${net_args[@]}"}); else extra=(${dp_args[@]+"${dp_args[@]}"}); fi
	log "running: $suite --berth-bin $BERTH_BIN --out $OUT ${common[*]} ${extra[*]}"
	set +e
	"$PERF_BIN/$suite" --berth-bin "$BERTH_BIN" --out "$OUT" ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"} \
		${common[@]+"${common[@]}"} ${extra[@]+"${extra[@]}"}
	s=$?
	set -e
	if [ "$s" -eq 130 ]; then
		log "$suite was interrupted; not starting the next suite"
		exit 130
	fi
	if [ "$s" -ne 0 ] && [ "$rc" -eq 0 ]; then
		rc=$s
	fi
done
log "reports: $OUT/net.md $OUT/dataplane.md"
exit "$rc"
