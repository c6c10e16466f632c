#!/usr/bin/env bash
# install-deps.sh: idempotently install the Debian packages and Go tools that
# `make test`, `make up` and `make perf` need on a fresh Debian 12 machine.
# Safe to run again and again: apt-get only installs what is missing, and Go
# tools are rebuilt only when the pinned version changes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

log() { printf '[install-deps] %s\n' "$*" >&2; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		log "must run as root (apt-get, /opt/cni/bin)"; exit 1
	fi
}

# Debian packages. iproute2 gives `ip netns`; the reference CNI plugins are
# the comparison baseline for the perf suite; iperf3 measures; clang/llvm and
# bpftool are only needed by `make generate`, but they are cheap to have.
APT_PKGS=(iproute2 iputils-ping iptables ethtool jq iperf3 containernetworking-plugins
	util-linux procps kmod ca-certificates socat python3)

apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		log "apt packages present"
		return
	fi
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# go_tool NAME PKG@VER: install a Go tool into $TOOLS_BIN unless the stamp
# says this exact version is already there.
go_tool() {
	local name=$1 spec=$2 stamp="$TOOLS_BIN/.$1.version"
	if [ -x "$TOOLS_BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$spec" ]; then
		return
	fi
	log "go install $spec"
	mkdir -p "$TOOLS_BIN"
	GOBIN="$TOOLS_BIN" go install "$spec"
	echo "$spec" >"$stamp"
}

need_root
apt_install "${APT_PKGS[@]}"
if [ "${WITH_CLANG:-0}" = 1 ]; then
	apt_install clang llvm bpftool libbpf-dev
fi
go_tool cnitool "github.com/containernetworking/cni/cnitool@${CNITOOL_VERSION}"
log "done"
