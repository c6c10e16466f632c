#!/usr/bin/env bash
# install-cri-tools.sh: build the CRI stack berth-cri runs on and is tested
# with, from the Go module proxy, into $CRI_TOOLS_BIN (default /opt/berth/bin):
#   containerd, containerd-shim-runc-v2, ctr   (containerd, tag no_btrfs)
#   runc                                       (tag seccomp, libseccomp-dev)
#   crictl, critest                            (cri-tools, copied out of the module cache)
#   ginkgo                                     (critest -parallel needs the CLI)
#   registry                                   (distribution v3, serves the test images)
# Each tool carries a stamp with its pinned version; a second run only checks
# the stamps. Binaries stay out of PATH so Docker's containerd/runc are untouched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
log() { printf '[install-cri-tools] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }
mkdir -p "$CRI_TOOLS_BIN"

apt_need() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

fresh() { # fresh NAME SPEC: true when NAME is built at SPEC
	[ -x "$CRI_TOOLS_BIN/$1" ] && [ "$(cat "$CRI_TOOLS_BIN/.$1.version" 2>/dev/null)" = "$2" ]
}
stamp() { echo "$2" >"$CRI_TOOLS_BIN/.$1.version"; }

# gobuild NAME SPEC TAGS CGO: go install one package at an exact version.
gobuild() {
	local name=$1 spec=$2 tags=$3 cgo=$4
	fresh "$name" "$spec" && return
	log "go install $spec (tags: ${tags:-none})"
	CGO_ENABLED=$cgo GOBIN="$CRI_TOOLS_BIN" GOFLAGS=-buildvcs=false \
		go install -trimpath ${tags:+-tags "$tags"} "$spec"
	stamp "$name" "$spec"
}

apt_need libseccomp-dev pkg-config gcc libc6-dev iptables
gobuild runc "github.com/opencontainers/runc@${RUNC_VERSION}" seccomp 1
for c in containerd containerd-shim-runc-v2 ctr; do
	gobuild "$c" "github.com/containerd/containerd/v2/cmd/$c@${CONTAINERD_VERSION}" no_btrfs 0
done
gobuild ginkgo "github.com/onsi/ginkgo/v2/ginkgo@${GINKGO_VERSION}" "" 0
gobuild registry "github.com/distribution/distribution/v3/cmd/registry@${REGISTRY_VERSION}" "" 0

# cri-tools: critest is a test binary (go test -c), so build from a copy of
# the module source; the version is injected as upstream's Makefile does.
spec="sigs.k8s.io/cri-tools@${CRI_TOOLS_VERSION}"
if ! fresh critest "$spec" || ! fresh crictl "$spec"; then
	log "building crictl and critest from $spec"
	dir=$(GOFLAGS=-mod=mod go mod download -json "$spec" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	cp -r "$dir/." "$work/"
	chmod -R u+w "$work"
	ldf="-X sigs.k8s.io/cri-tools/pkg/version.Version=${CRI_TOOLS_VERSION#v}"
	(cd "$work" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$ldf" -o "$CRI_TOOLS_BIN/crictl" ./cmd/crictl)
	(cd "$work" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go test -c -trimpath -ldflags "$ldf" -o "$CRI_TOOLS_BIN/critest" ./cmd/critest)
	stamp crictl "$spec"; stamp critest "$spec"
fi
log "done: $(ls "$CRI_TOOLS_BIN" | tr '\n' ' ')"
