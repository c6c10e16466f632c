#!/usr/bin/env bash
# perf-csi.sh: berth-csi's fio report against the native backing directory
# and go-fuse's plain loopback without passthrough (fourth suite of
# `make perf`):
#
#   1. installs what it needs (hack/install-deps.sh, then fio from Debian
#      if it is missing; both idempotent),
#   2. runs test/perf/csifio (BERTH_PERF_CSI=1 go test ...), which builds
#      berth-csi from this tree through test/csienv, mounts a volume, the
#      anchor and a native directory on the same filesystem, and writes
#      csi.json, csi.md and csi-*.svg under $OUT (default
#      test/perf/results): sequential 1 MiB write/read and random 4 KiB
#      read/write at QD16, buffered and O_DIRECT, on the three, and the
#      node plugin's memory per mounted volume.
#
#   hack/perf-csi.sh                  # full report (~17 minutes: 2 x 20 s per job and target)
#   hack/perf-csi.sh --quick          # smoke run: 1 x 3 s, 256 MiB file (~2 minutes)
#   hack/perf-csi.sh --runtime 30 --repeats 3 --file-mib 2048 --ioengine libaio
#
# Environment: OUT, SKIP_DEPS=1 (do not run install-deps.sh; fio is still
# installed when missing). Must run as root. Drops the whole machine's page
# cache before every fio run. A missed target never fails this script; it
# exits non-zero only when the suite cannot run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[perf-csi] %s\n' "$*" >&2; }
# shellcheck source=perf-common.sh
. "$here/perf-common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# Flags become the suite's environment: go test passes no arguments of
# its own to a test.
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) export CSI_PERF_QUICK=1 ;;
	--runtime) export CSI_PERF_RUNTIME=${2:?--runtime SECONDS}; shift ;;
	--repeats) export CSI_PERF_REPEATS=${2:?--repeats N}; shift ;;
	--file-mib) export CSI_PERF_FILE_MIB=${2:?--file-mib MIB}; shift ;;
	--rss-volumes) export CSI_PERF_RSS_VOLUMES=${2:?--rss-volumes N}; shift ;;
	--ioengine) export CSI_PERF_IOENGINE=${2:?--ioengine io_uring|libaio}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) log "unknown argument $1"; usage >&2; exit 2 ;;
	esac
	shift
done

perf_setup
# fio is this suite's own tool: installed whenever it is missing, as
# install-deps.sh installs its packages.
if ! command -v fio >/dev/null; then
	log "apt-get install fio"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends fio >/dev/null
	command -v fio >/dev/null || { log "fio not found after apt-get install fio"; exit 1; }
fi
# go test runs in the package directory: the output path must be absolute.
mkdir -p "$OUT"
CSI_PERF_OUT=$(cd "$OUT" && pwd)
export CSI_PERF_OUT BERTH_PERF_CSI=1

log "running: BERTH_PERF_CSI=1 go test -count=1 -v -timeout 90m -run TestCSIFio ./test/perf/csifio/ (out: $CSI_PERF_OUT)"
# exec: a ^C reaches the test binary (same process group), which then
# stops fio and its cleanups unmount the anchor and every volume.
exec go test -count=1 -v -timeout 90m -run 'TestCSIFio$' ./test/perf/csifio/
