# perf-common.sh: shared steps of the perf report scripts (perf-net.sh,
# perf-dataplane.sh, perf.sh). Sourced, never executed. Expects $here (the
# hack directory) and a log() function.
# shellcheck shell=bash

# shellcheck source=versions.sh
. "$here/versions.sh"
cd "$REPO_ROOT"

BERTH_BIN=${BERTH_BIN:-_output/bin/berth}
OUT=${OUT:-test/perf/results}
PERF_BIN=_output/perf

# perf_setup: root check, dependencies (unless SKIP_DEPS=1), tools.
perf_setup() {
	if [ "$(id -u)" -ne 0 ]; then
		log "must run as root (network namespaces, CNI plugins, bpffs)"
		exit 1
	fi
	if [ "${SKIP_DEPS:-0}" != 1 ]; then
		bash "$here/install-deps.sh"
	fi
	local tool
	for tool in go iperf3 ip tc; do
		command -v "$tool" >/dev/null || { log "$tool not found after install-deps.sh"; exit 1; }
	done
	mkdir -p "$(dirname "$BERTH_BIN")" "$PERF_BIN" "$OUT"
}

# perf_build_berth: build berth-cni beside its final name and move it into
# place only when the build succeeds, so a failed build can never leave a
# stale binary to be measured as if it were current. On failure it sets
# BUILD_ARGS=(--berth-build-error "<compiler output>") for the suites,
# which then report berth's cases as skipped and exit 1.
perf_build_berth() {
	BUILD_ARGS=()
	local build_log
	build_log=$(mktemp)
	# shellcheck disable=SC2064 # expand now: the names are fixed
	trap "rm -f '$build_log' '$BERTH_BIN.tmp.$$'" EXIT
	log "building berth-cni -> $BERTH_BIN"
	if CGO_ENABLED=0 go build -trimpath -o "$BERTH_BIN.tmp.$$" ./cmd/berth-cni >"$build_log" 2>&1; then
		mv -f "$BERTH_BIN.tmp.$$" "$BERTH_BIN"
	else
		rm -f "$BERTH_BIN.tmp.$$"
		log "berth-cni does not build; its cases will be reported as skipped:"
		sed 's/^/    /' "$build_log" >&2
		BUILD_ARGS=(--berth-build-error "$(head -c 1500 "$build_log")")
	fi
	rm -f "$build_log"
	trap - EXIT
}

# perf_build_suite NAME: build test/perf/NAME into $PERF_BIN/NAME.
perf_build_suite() {
	log "building $1"
	go build -o "$PERF_BIN/$1" "./test/perf/$1"
}
