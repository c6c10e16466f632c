#!/usr/bin/env bash
# registry.sh start|stop|status [--addr HOST:PORT] [--root DIR]
#
# Runs the local image registry the CRI tests pull from (distribution v3,
# $CRI_TOOLS_BIN/registry from hack/install-cri-tools.sh). Storage is a
# plain directory that outlives the process, so images pushed once by
# hack/test-images.sh are reused by every later run.
#
#   start   no-op when something already answers /v2/ at ADDR; otherwise
#           writes DIR/config.yml, starts the registry in its own session
#           (pid in DIR/registry.pid, log in DIR/registry.log) and waits
#           until /v2/ answers.
#   stop    stops the registry recorded in DIR/registry.pid (TERM, then KILL).
#   status  exit 0 and print the pid when ADDR serves /v2/, 1 otherwise.
#
# Defaults: --addr 127.0.0.1:5000, --root /var/lib/berth/registry.
# Listening on loopback only: the registry has no authentication.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
log() { printf '[registry] %s\n' "$*" >&2; }
usage() { sed -n '2,3p' "$0" | sed 's/^# //' >&2; exit 2; }

[ $# -ge 1 ] || usage
action=$1
shift
addr=127.0.0.1:5000
root=/var/lib/berth/registry
while [ $# -gt 0 ]; do
	case $1 in
	--addr) addr=${2:?}; shift 2 ;;
	--root) root=${2:?}; shift 2 ;;
	*) usage ;;
	esac
done
pidfile=$root/registry.pid
bin=$CRI_TOOLS_BIN/registry

serving() { curl -fsS -m 2 -o /dev/null "http://$addr/v2/" 2>/dev/null; }

# ourpid: the pid from the pid file, if that process is still our registry
# (a recycled pid must never be signalled).
ourpid() {
	local pid
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "^$bin serve $root/config.yml" &&
		echo "$pid"
}

start() {
	if serving; then
		log "already serving at $addr${pid:+ (pid $pid)}"
		return 0
	fi
	[ -x "$bin" ] || { log "$bin missing: run hack/install-cri-tools.sh"; exit 1; }
	mkdir -p "$root/data"
	# Concurrent starts (parallel test processes) queue here; the loser
	# then finds the winner's registry serving.
	exec 9>"$root/.start.lock"
	flock 9
	if serving; then
		log "already serving at $addr"
		return 0
	fi
	pid=$(ourpid || true)
	if [ -z "$pid" ]; then
		cat >"$root/config.yml" <<-YAML
			# Written by hack/registry.sh; rewritten on every start.
			version: 0.1
			log:
			  level: warn
			  accesslog:
			    disabled: true
			storage:
			  filesystem:
			    rootdirectory: $root/data
			  delete:
			    enabled: true
			http:
			  addr: $addr
			  # Only signs upload state between requests to this one instance.
			  secret: berth-local-test-registry
		YAML
		# setsid: the registry must outlive the shell or test that started
		# it and must not get its terminal's signals. No tracing exporter:
		# the default one keeps dialling a collector on localhost:4318.
		# (Without job control the job is no process group leader, so setsid
		# execs in place and $! is the registry itself.) fd 9 is the lock.
		OTEL_TRACES_EXPORTER=none setsid "$bin" serve "$root/config.yml" \
			</dev/null >>"$root/registry.log" 2>&1 9>&- &
		pid=$!
		echo "$pid" >"$pidfile"
		log "started pid $pid at $addr (root $root)"
	fi
	for _ in $(seq 100); do
		serving && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	log "registry not serving at $addr; last log lines:"
	tail -n 20 "$root/registry.log" >&2 || true
	stop
	exit 1
}

stop() {
	local pid
	if ! pid=$(ourpid); then
		log "not running (no live pid in $pidfile)"
		rm -f "$pidfile"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$pidfile"
	log "stopped pid $pid"
}

pid=$(ourpid || true)
case $action in
start) start ;;
stop) stop ;;
status)
	if serving; then
		echo "serving at $addr${pid:+ pid $pid}"
		exit 0
	fi
	echo "not serving at $addr"
	exit 1
	;;
*) usage ;;
esac
