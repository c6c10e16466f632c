#!/usr/bin/env bash
# perf.sh: every berth performance report, one after the other:
# test/perf/netperf (pod-to-pod throughput, CNI ADD/DEL latency; net.*),
# test/perf/dataplane (eBPF shaping and isolation; dataplane.*),
# test/perf/crilat (berth-cri vs containerd's CRI: pod start and stop
# latency, RSS; cri.*, via hack/perf-cri.sh), test/perf/csifio
# (berth-csi vs the native directory and plain FUSE under fio, RSS per
# volume; csi.*, via hack/perf-csi.sh), then test/perf/kindperf (iperf3,
# shaped pods, fio and pod start inside the kind cluster vs the reference
# cluster; kind.*, via hack/perf-kind.sh, which needs `make up` first), with
# one dependency install and one berth-cni build.
#
#   hack/perf.sh            # full reports (~15 + ~12 + ~4 + ~17 + ~30 minutes)
#   hack/perf.sh --quick    # smoke runs of all five
#
# --quick is the only argument; suite-specific flags go in NETPERF_ARGS,
# DATAPLANE_ARGS, CRI_ARGS, CSI_ARGS and KIND_ARGS (word-split), e.g.
# DATAPLANE_ARGS="--cases berth-veth", CRI_ARGS="--pods 100",
# CSI_ARGS="--runtime 30", KIND_ARGS="--parts net,shaped".
# Environment: BERTH_BIN, OUT, SKIP_DEPS=1, as for perf-net.sh. Must run as
# root. Exits with the first non-zero status of the five suites (130 at
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
	*) log "unknown argument $a (suite flags go in NETPERF_ARGS / DATAPLANE_ARGS / CRI_ARGS / CSI_ARGS / KIND_ARGS)"; exit 2 ;;
	esac
done
read -r -a net_args <<<"${NETPERF_ARGS:-}"
read -r -a dp_args <<<"${DATAPLANE_ARGS:-}"
read -r -a cri_args <<<"${CRI_ARGS:-}"
read -r -a csi_args <<<"${CSI_ARGS:-}"
read -r -a kind_args <<<"${KIND_ARGS:-}"

perf_setup
if [ "${SKIP_DEPS:-0}" != 1 ]; then
	bash "$here/install-cri-tools.sh"
fi
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
# The CRI suite is a go test (it builds berth-cri itself through
# test/crienv); perf-cri.sh runs it, with the dependencies installed above.
log "running: perf-cri.sh ${common[*]} ${cri_args[*]}"
set +e
OUT="$OUT" SKIP_DEPS=1 bash "$here/perf-cri.sh" ${common[@]+"${common[@]}"} ${cri_args[@]+"${cri_args[@]}"}
s=$?
set -e
if [ "$s" -eq 130 ]; then
	log "perf-cri.sh was interrupted; not starting the next suite"
	exit 130
fi
if [ "$s" -ne 0 ] && [ "$rc" -eq 0 ]; then
	rc=$s
fi
# The CSI suite is a go test too (berth-csi is built through test/csienv);
# perf-csi.sh installs fio if it is missing, SKIP_DEPS or not.
log "running: perf-csi.sh ${common[*]} ${csi_args[*]}"
set +e
OUT="$OUT" SKIP_DEPS=1 bash "$here/perf-csi.sh" ${common[@]+"${common[@]}"} ${csi_args[@]+"${csi_args[@]}"}
s=$?
set -e
if [ "$s" -eq 130 ]; then
	log "perf-csi.sh was interrupted; not starting the next suite"
	exit 130
fi
if [ "$s" -ne 0 ] && [ "$rc" -eq 0 ]; then
	rc=$s
fi
# The in-cluster suite runs against the kind clusters (make up; it creates
# the reference cluster itself) and builds its own tools image.
log "running: perf-kind.sh ${common[*]} ${kind_args[*]}"
set +e
OUT="$OUT" SKIP_DEPS=1 bash "$here/perf-kind.sh" ${common[@]+"${common[@]}"} ${kind_args[@]+"${kind_args[@]}"}
s=$?
set -e
if [ "$s" -ne 0 ] && [ "$rc" -eq 0 ]; then
	rc=$s
fi
log "reports: $OUT/net.md $OUT/dataplane.md $OUT/cri.md $OUT/csi.md $OUT/kind.md"
exit "$rc"
