#!/usr/bin/env bash
# perf-image.sh [--load CLUSTER]...
#
# The tools image of the in-cluster performance suite (hack/perf-kind.sh,
# test/perf/kindperf), built with no registry and no Docker build:
#
#   berth.dev/perf-tools:bookworm-<key>
#       debootstrap --variant=minbase --include=iperf3,fio,iputils-ping
#       bookworm, packed by imgpack (hack/kind/k8s/imgpack) into a
#       docker-archive tarball under $KIND_OUTPUT/perf-tools.
#
# The tag carries a hash of the image's inputs, so a changed image is a new
# tag: berth-cri never sees a tag re-imported with other content.
# --load CLUSTER (repeatable) runs `kind load image-archive` into that
# cluster's worker nodes (the suite only schedules there), skipping nodes
# whose containerd already holds the tag.
#
# Cached like control-plane-images.sh's kube-proxy base: the rootfs tar is
# rebuilt only when its recipe changes (its .debs are kept, seeded from the
# node base image's debootstrap cache), the image tarball only when the
# rootfs or imgpack change. A cached run takes a few seconds.
# Prints the image reference on stdout. Needs root the first time
# (debootstrap). Builds run under `nice -n 10`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"
log() { printf '[perf-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

clusters=()
while [ $# -gt 0 ]; do
	case $1 in
	--load) clusters+=("${2:?--load CLUSTER}"); shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) sed -n '2p' "$0" >&2; exit 2 ;;
	esac
done

dir=$KIND_OUTPUT/perf-tools
mirror=$KIND_BASE_MIRROR
repo_name=berth.dev/perf-tools
mkdir -p "$dir/debs"
exec 9>"$dir/.lock"
flock -w 1800 9 || die "another perf-image.sh holds $dir/.lock"
t0=$SECONDS

# ---- rootfs ----------------------------------------------------------------

# iperf3 and fio are the measurements; iputils-ping measures RTT under load
# (busybox's ping has no sub-0.2 s interval for a non-tty and prints no
# per-packet times in every build). fio pulls python3 and the Ceph/Gluster
# client libraries through its Debian dependencies: larger, but Debian's
# own build, as on the host of the CSI suite.
pkgs=iperf3,fio,iputils-ping
recipe="debootstrap --variant=minbase --include=$pkgs $KIND_BASE_SUITE $mirror; rev 1"
rootfs=$dir/rootfs.tar
if [ -f "$rootfs" ] && [ "$(cat "$rootfs.recipe" 2>/dev/null)" = "$recipe" ]; then
	log "rootfs: cached ($(du -m "$rootfs" | cut -f1) MB)"
else
	[ "$(id -u)" -eq 0 ] || die "building the tools rootfs needs root (debootstrap)"
	command -v debootstrap >/dev/null || {
		log "apt-get install debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
	}
	# The node base image's .debs (same suite and mirror) save most of the
	# downloads: hard links, read only, so neither cache is disturbed.
	if [ -d "$KIND_ROOTFS_CACHE/debs" ]; then
		cp -ln "$KIND_ROOTFS_CACHE"/debs/*.deb "$dir/debs/" 2>/dev/null || true
	fi
	root=$dir/rootfs.$$
	trap 'rm -rf "$root" "$rootfs.tmp"' EXIT
	rm -rf "$root"
	log "debootstrap --variant=minbase --include=$pkgs $KIND_BASE_SUITE ($mirror)"
	nice -n 10 debootstrap --variant=minbase --include="$pkgs" --cache-dir="$dir/debs" \
		"$KIND_BASE_SUITE" "$root" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
		{ tail -20 "$dir/debootstrap.log" >&2; die "debootstrap failed (log: $dir/debootstrap.log)"; }
	# The pods only run the tools: no docs, manuals, translations, apt
	# lists or caches, logs. debootstrap copied the host's resolv.conf and
	# hostname; the runtime mounts its own.
	rm -rf "$root"/usr/share/{doc,man,info,locale}/* "$root"/var/cache/apt/* \
		"$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/var/cache/debconf/*-old "$root"/tmp/*
	: >"$root/etc/resolv.conf"
	echo perf-tools >"$root/etc/hostname"
	for b in iperf3 fio ping; do
		[ -x "$root/usr/bin/$b" ] || die "the rootfs has no /usr/bin/$b"
	done
	tar --numeric-owner --sort=name --xattrs -C "$root" \
		--exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$rootfs.tmp" .
	rm -rf "$root"
	mv "$rootfs.tmp" "$rootfs"
	trap - EXIT
	echo "$recipe" >"$rootfs.recipe"
	log "rootfs: built in $((SECONDS - t0))s ($(du -m "$rootfs" | cut -f1) MB)"
fi

# ---- image -----------------------------------------------------------------

# imgpack: our own build of it, so this never races control-plane-images.sh
# over its binary.
(cd "$here/k8s/imgpack" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
	go build -trimpath -o "$dir/imgpack" .)
imgpack_sum=$(cat "$here/k8s/imgpack/main.go" "$here/k8s/imgpack/go.sum" | sha256sum | cut -c1-64)
rootfs_sum=$(sha256sum "$rootfs" | cut -c1-64)
args=(-base "$rootfs" -user 0 -workdir /
	-env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	-cmd "sleep infinity"
	-label "dev.berth.built-by=hack/kind/perf-image.sh"
	-label "dev.berth.recipe=$recipe"
	-label "org.opencontainers.image.source=https://github.com/berthdev/berth")
key=$(printf '%s\n' "$imgpack_sum" "$rootfs_sum" "${args[@]}" | sha256sum | cut -c1-12)
ref=$repo_name:$KIND_BASE_SUITE-$key
tar=$dir/perf-tools-$key.tar
if [ -f "$tar" ] && [ "$(cat "$tar.ref" 2>/dev/null)" = "$ref" ]; then
	log "$ref: cached ($(du -m "$tar" | cut -f1) MB)"
else
	log "imgpack $ref"
	id=$(nice -n 10 "$dir/imgpack" -o "$tar.tmp" -tag "$ref" "${args[@]}")
	mv "$tar.tmp" "$tar"
	echo "$ref" >"$tar.ref"
	echo "$id" >"$tar.id"
	# Older tarballs are stale inputs of nothing.
	for old in "$dir"/perf-tools-*.tar; do
		[ "$old" = "$tar" ] || rm -f "$old" "$old.ref" "$old.id"
	done
	log "$ref: packed ($(du -m "$tar" | cut -f1) MB)"
fi

# ---- load ------------------------------------------------------------------

if [ "${#clusters[@]}" -gt 0 ]; then
	export PATH=$here/docker-shim:$KIND_BIN:$PATH
	command -v kind >/dev/null || die "kind is not built: run hack/kind/build-k8s.sh"
	# Outputs are captured before grep: under pipefail, grep -q closing the
	# pipe early would fail the producer and so the whole test.
	have_clusters=$(kind get clusters 2>/dev/null || true)
	for c in "${clusters[@]}"; do
		grep -qx "$c" <<<"$have_clusters" || die "no kind cluster $c"
		need=()
		for node in $(kind get nodes --name "$c"); do
			case $node in *-control-plane) continue ;; esac
			have=$(docker exec "$node" ctr -n k8s.io images ls -q "name==docker.io/$ref" "name==$ref" 2>/dev/null || true)
			[ -n "$have" ] && continue
			need+=("$node")
		done
		if [ "${#need[@]}" -eq 0 ]; then
			log "$c: every worker has $ref"
			continue
		fi
		s=$SECONDS
		kind load image-archive "$tar" --name "$c" --nodes "$(IFS=,; echo "${need[*]}")" >/dev/null
		log "$c: loaded into ${need[*]} in $((SECONDS - s))s"
	done
fi
log "done in $((SECONDS - t0))s"
echo "$ref"
