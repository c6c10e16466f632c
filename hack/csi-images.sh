#!/usr/bin/env bash
# csi-images.sh [all|sidecars|berth-csi] [--no-save]
#
# Builds the container images csi/deploy/ runs, offline: the Go module proxy
# is the only source, and every image is built FROM scratch (the binaries are
# static), so the Docker Engine never has to pull.
#
#   sidecars   csi-provisioner, csi-resizer, csi-snapshotter and
#              snapshot-controller at the versions pinned in hack/versions.sh.
#              Each module's source is copied out of the module cache into
#              _output/csi-src/<name> (their go.mod files carry replace lines,
#              so `go install mod@ver` cannot build them) and built there into
#              _output/csi-tools/<bin>.
#   berth-csi  berth.dev/berth-csi:dev from ./cmd/berth-csi (_output/bin/berth-csi).
#   all        both (the default).
#
# Cached: a source copy, a binary, an image and a saved tar are each skipped
# when they already exist for the pinned version (for berth-csi: for the same
# binary). --no-save skips writing docker-archive tars to _output/images/
# (they are what `kind load image-archive` and `ctr images import` take).
# Builds run under `nice -n 10`; the machine is shared.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
log() { printf '[csi-images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

what=all
save=1
while [ $# -gt 0 ]; do
	case $1 in
	all | sidecars | berth-csi) what=$1; shift ;;
	--no-save) save=0; shift ;;
	*) sed -n '2p' "$0" >&2; exit 2 ;;
	esac
done

out=$REPO_ROOT/_output
src_root=$out/csi-src
tools=$out/csi-tools
images=$out/images
mkdir -p "$src_root" "$tools" "$images"
command -v docker >/dev/null || die "docker is not installed"
docker version >/dev/null 2>&1 || die "the Docker Engine is not reachable"

summary=()
note() { summary+=("$*"); }

# moddir MOD@VER: download one module version and print its source directory.
# Runs outside any module so the checkout's go.mod is never consulted.
moddir() {
	local json dir
	json=$(cd / && GOFLAGS=-mod=mod go mod download -json "$1") || die "go mod download $1 failed"
	dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || die "go mod download $1: no Dir in: $json"
	printf '%s\n' "$dir"
}

# fetch_src NAME MOD VER: copy MOD@VER's source to $src_root/NAME.
fetch_src() {
	local name=$1 mod=$2 ver=$3 dst=$src_root/$1
	[ "$(cat "$dst/.berth-source" 2>/dev/null)" = "$mod@$ver" ] && return
	log "copying $mod@$ver to ${dst#"$REPO_ROOT"/}"
	rm -rf "$dst" "$dst.tmp"
	mkdir -p "$dst.tmp"
	cp -r "$(moddir "$mod@$ver")/." "$dst.tmp/"
	if [ "$name" = external-snapshotter ]; then
		# The main module replaces its client API module with ./client, a
		# nested module that module zips leave out; the client module is
		# tagged with the same version.
		mkdir -p "$dst.tmp/client"
		cp -r "$(moddir "github.com/kubernetes-csi/external-snapshotter/client/v8@$ver")/." "$dst.tmp/client/"
	fi
	chmod -R u+w "$dst.tmp"
	echo "$mod@$ver" >"$dst.tmp/.berth-source"
	mv "$dst.tmp" "$dst"
}

# build_bin NAME BIN MOD VER: build ./cmd/BIN of a fetched source.
build_bin() {
	local name=$1 bin=$2 mod=$3 ver=$4 t0=$SECONDS
	if [ -x "$tools/$bin" ] && [ "$(cat "$tools/.$bin.version" 2>/dev/null)" = "$mod@$ver" ]; then
		note "$bin: binary cached ($mod@$ver)"
		return
	fi
	log "go build $bin ($mod@$ver)"
	(cd "$src_root/$name" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 \
		go build -trimpath -ldflags "-s -w -X main.version=$ver" -o "$tools/$bin.tmp" "./cmd/$bin")
	mv "$tools/$bin.tmp" "$tools/$bin"
	echo "$mod@$ver" >"$tools/.$bin.version"
	note "$bin: built in $((SECONDS - t0))s ($mod@$ver)"
}

# build_image TAG BINARY VERSION SOURCE: a FROM scratch image holding one
# static binary as /usr/local/bin/<name>, which is also its entrypoint. The
# binary's digest is a label: an image built from the same binary is kept.
build_image() {
	local tag=$1 binpath=$2 ver=$3 source=$4 name sum have ctx t0=$SECONDS
	name=$(basename "$binpath")
	sum=$(sha256sum "$binpath" | cut -d' ' -f1)
	have=$(docker image inspect -f '{{index .Config.Labels "dev.berth.binary-sha256"}}' "$tag" 2>/dev/null || true)
	if [ "$have" = "$sum" ]; then
		note "$tag: image cached"
	else
		log "docker build $tag"
		ctx=$(mktemp -d)
		cp "$binpath" "$ctx/$name"
		# Its output (and the legacy builder's deprecation notice) is shown
		# only when the build fails.
		if ! docker build -t "$tag" -f - "$ctx" >"$ctx.log" 2>&1 <<EOF; then
FROM scratch
COPY $name /usr/local/bin/$name
ENV PATH=/usr/local/bin
LABEL org.opencontainers.image.version="$ver" \\
      org.opencontainers.image.source="$source" \\
      dev.berth.binary-sha256="$sum"
ENTRYPOINT ["/usr/local/bin/$name"]
EOF
			cat "$ctx.log" >&2
			rm -rf "$ctx" "$ctx.log"
			die "docker build $tag failed"
		fi
		rm -rf "$ctx" "$ctx.log"
		note "$tag: image built in $((SECONDS - t0))s"
	fi
	[ "$save" = 1 ] || return 0
	local id tar
	id=$(docker image inspect -f '{{.Id}}' "$tag")
	tar=$images/$(echo "${tag#*/}" | tr ':/' '__').tar
	if [ -f "$tar" ] && [ "$(cat "$tar.id" 2>/dev/null)" = "$id" ]; then
		return
	fi
	docker save -o "$tar.tmp" "$tag"
	mv "$tar.tmp" "$tar"
	echo "$id" >"$tar.id"
	note "$tag: saved ${tar#"$REPO_ROOT"/}"
}

sidecars() {
	local p=github.com/kubernetes-csi
	fetch_src external-provisioner "$p/external-provisioner/v6" "$CSI_PROVISIONER_VERSION"
	build_bin external-provisioner csi-provisioner "$p/external-provisioner/v6" "$CSI_PROVISIONER_VERSION"
	build_image "$CSI_IMAGE_PREFIX/csi-provisioner:$CSI_PROVISIONER_VERSION" "$tools/csi-provisioner" \
		"$CSI_PROVISIONER_VERSION" "$p/external-provisioner/v6"

	fetch_src external-resizer "$p/external-resizer" "$CSI_RESIZER_VERSION"
	build_bin external-resizer csi-resizer "$p/external-resizer" "$CSI_RESIZER_VERSION"
	build_image "$CSI_IMAGE_PREFIX/csi-resizer:$CSI_RESIZER_VERSION" "$tools/csi-resizer" \
		"$CSI_RESIZER_VERSION" "$p/external-resizer"

	fetch_src external-snapshotter "$p/external-snapshotter/v8" "$CSI_SNAPSHOTTER_VERSION"
	for bin in csi-snapshotter snapshot-controller; do
		build_bin external-snapshotter "$bin" "$p/external-snapshotter/v8" "$CSI_SNAPSHOTTER_VERSION"
		build_image "$CSI_IMAGE_PREFIX/$bin:$CSI_SNAPSHOTTER_VERSION" "$tools/$bin" \
			"$CSI_SNAPSHOTTER_VERSION" "$p/external-snapshotter/v8"
	done
}

berth_csi() {
	[ -d "$REPO_ROOT/cmd/berth-csi" ] || die "cmd/berth-csi does not exist yet; build the sidecars alone with: $0 sidecars"
	local t0=$SECONDS
	mkdir -p "$out/bin"
	log "go build ./cmd/berth-csi"
	(cd "$REPO_ROOT" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 \
		go build -trimpath -ldflags "-s -w" -o "$out/bin/berth-csi" ./cmd/berth-csi) ||
		die "./cmd/berth-csi does not build; the sidecars build alone with: $0 sidecars"
	note "berth-csi: go build took $((SECONDS - t0))s"
	build_image "$CSI_IMAGE_PREFIX/berth-csi:dev" "$out/bin/berth-csi" dev github.com/berthdev/berth
}

case $what in
sidecars) sidecars ;;
berth-csi) berth_csi ;;
all) sidecars; berth_csi ;;
esac

for line in "${summary[@]}"; do log "$line"; done
for tag in "$CSI_IMAGE_PREFIX/csi-provisioner:$CSI_PROVISIONER_VERSION" \
	"$CSI_IMAGE_PREFIX/csi-resizer:$CSI_RESIZER_VERSION" \
	"$CSI_IMAGE_PREFIX/csi-snapshotter:$CSI_SNAPSHOTTER_VERSION" \
	"$CSI_IMAGE_PREFIX/snapshot-controller:$CSI_SNAPSHOTTER_VERSION" \
	"$CSI_IMAGE_PREFIX/berth-csi:dev"; do
	size=$(docker image inspect -f '{{.Size}}' "$tag" 2>/dev/null) || continue
	log "$(awk -v t="$tag" -v s="$size" 'BEGIN { printf "%-45s %6.1f MB", t, s / 1e6 }')"
done
