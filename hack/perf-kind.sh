#!/usr/bin/env bash
# perf-kind.sh: the in-cluster performance report (fifth suite of
# `make perf`): berth's kind cluster against the reference cluster, each
# figure a ratio to the reference measured in the same run.
#
#   1. checks the berth cluster (`make up`; context kind-berth) and creates
#      the reference cluster if it is missing
#      (hack/kind/cluster.sh create --recipe reference --name ref),
#      then waits until every node of both is Ready,
#   2. builds or reuses the tools image berth.dev/perf-tools
#      (hack/kind/perf-image.sh: iperf3, fio and ping on a Debian minbase,
#      no registry) and loads it into both clusters' workers,
#   3. runs test/perf/kindperf (BERTH_KIND_PERF=1 go test ...), which
#      writes kind.json, kind.md and kind*.svg under $OUT (default
#      test/perf/results):
#        - iperf3 pod to pod, same node and cross node, P1 and P4: berth
#          vxlan and berth macvlan (skipped, with the reason, when the
#          berth-macvlan network is not there) vs the reference bridge;
#        - shaped pods (kubernetes.io/egress-bandwidth 100M and 1G), berth
#          vs the reference bandwidth plugin: achieved rate, RTT under load;
#        - fio, the CSI suite's job set, on a berth-csi PVC vs hostPath in
#          the same pod;
#        - pod start latency, 30 pods, sequential and in a burst.
#
#   hack/perf-kind.sh                   # full report (~30 minutes)
#   hack/perf-kind.sh --quick           # smoke run (~5 minutes)
#   hack/perf-kind.sh --parts net,shaped --seconds 20 --repeats 5
#   hack/perf-kind.sh --pods 60 --fio-runtime 30 --fio-repeats 3 --fio-file-mib 2048
#
# Environment: OUT, BERTH_CLUSTER (default berth), REF_CLUSTER (default
# ref), SKIP_DEPS=1 (accepted for perf.sh; this script installs nothing on
# the host beyond what the image build needs). Must run as root (fio drops
# the host's page cache; the image build runs debootstrap). A slow or
# missed figure never fails this script; it exits non-zero only when the
# suite cannot run. The clusters are left as they were found (plus the
# reference cluster when it had to be created, and the tools image).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[perf-kind] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=versions.sh
. "$here/versions.sh"
cd "$REPO_ROOT"
OUT=${OUT:-test/perf/results}
BERTH_CLUSTER=${BERTH_CLUSTER:-berth}
REF_CLUSTER=${REF_CLUSTER:-ref}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# Flags become the suite's environment: go test passes no arguments of its
# own to a test.
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) export KIND_PERF_QUICK=1 ;;
	--parts) export KIND_PERF_PARTS=${2:?--parts net,shaped,fio,podstart}; shift ;;
	--seconds) export KIND_PERF_SECONDS=${2:?--seconds N}; shift ;;
	--repeats) export KIND_PERF_REPEATS=${2:?--repeats N}; shift ;;
	--pods) export KIND_PERF_PODS=${2:?--pods N}; shift ;;
	--fio-runtime) export KIND_PERF_FIO_RUNTIME=${2:?--fio-runtime SECONDS}; shift ;;
	--fio-repeats) export KIND_PERF_FIO_REPEATS=${2:?--fio-repeats N}; shift ;;
	--fio-file-mib) export KIND_PERF_FIO_FILE_MIB=${2:?--fio-file-mib MIB}; shift ;;
	--storage-class) export KIND_PERF_STORAGE_CLASS=${2:?--storage-class NAME}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) log "unknown argument $1"; usage >&2; exit 2 ;;
	esac
	shift
done

[ "$(id -u)" -eq 0 ] || die "must run as root (fio drops the host's page cache; the tools image needs debootstrap)"
export PATH=$here/kind/docker-shim:$KIND_BIN:$PATH
for tool in kind kubectl docker go; do
	command -v "$tool" >/dev/null || die "$tool not found: run 'make up' first (it builds kind and kubectl into $KIND_BIN)"
done
t0=$SECONDS

# ---- clusters ------------------------------------------------------------------

clusters=$(kind get clusters 2>/dev/null || true)
grep -qx "$BERTH_CLUSTER" <<<"$clusters" ||
	die "no kind cluster '$BERTH_CLUSTER': run 'make up' first (it builds the node image and deploys berth)"
if ! grep -qx "$REF_CLUSTER" <<<"$clusters"; then
	log "no reference cluster '$REF_CLUSTER': creating it (hack/kind/cluster.sh create --recipe reference --name $REF_CLUSTER)"
	bash "$here/kind/cluster.sh" create --recipe reference --name "$REF_CLUSTER"
fi
for c in "$BERTH_CLUSTER" "$REF_CLUSTER"; do
	log "waiting for every node of kind-$c to be Ready"
	kubectl --context "kind-$c" wait --for=condition=Ready nodes --all --timeout=300s >/dev/null ||
		die "kind-$c: not every node is Ready after 5 minutes (kubectl --context kind-$c get nodes)"
done
# The fio part needs berth-csi's StorageClass; the suite says so itself if
# it is missing, but a clear word here saves a run.
sc=${KIND_PERF_STORAGE_CLASS:-berth}
kubectl --context "kind-$BERTH_CLUSTER" get storageclass "$sc" >/dev/null 2>&1 ||
	log "warning: kind-$BERTH_CLUSTER has no StorageClass '$sc': the fio part will be reported as skipped"

# ---- tools image ---------------------------------------------------------------

image=$(bash "$here/kind/perf-image.sh" --load "$BERTH_CLUSTER" --load "$REF_CLUSTER") ||
	die "the tools image could not be built or loaded (hack/kind/perf-image.sh)"
log "tools image $image (clusters and image ready in $((SECONDS - t0))s)"

# ---- suite ---------------------------------------------------------------------

# go test runs in the package directory: the output path must be absolute.
mkdir -p "$OUT"
KIND_PERF_OUT=$(cd "$OUT" && pwd)
export KIND_PERF_OUT KIND_PERF_IMAGE=$image BERTH_KIND_PERF=1
export KIND_PERF_BERTH_CONTEXT=kind-$BERTH_CLUSTER KIND_PERF_REF_CONTEXT=kind-$REF_CLUSTER
log "running: BERTH_KIND_PERF=1 go test -count=1 -v -timeout 150m -run TestKindPerf ./test/perf/kindperf/ (out: $KIND_PERF_OUT)"
# exec: a ^C reaches the test binary (same process group), which ends the
# current case, deletes its namespaces and writes what it measured.
exec go test -count=1 -v -timeout 150m -run 'TestKindPerf$' ./test/perf/kindperf/
