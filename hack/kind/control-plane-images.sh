#!/usr/bin/env bash
# control-plane-images.sh [--docker-load]
#
# Packs every image `kubeadm config images list` names for $KIND_K8S_VERSION
# (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd,
# coredns, pause) from the binaries hack/kind/build-k8s.sh built, with no
# registry and no pull: each image is written by imgpack
# (hack/kind/k8s/imgpack, go-containerregistry) as a docker-archive tarball
# under $KIND_IMAGES (_output/kind/images), under the exact name and tag
# kubeadm expects. `ctr -n k8s.io images import`, `docker load` and
# `kind load image-archive` all take these tarballs.
#
#   kube-apiserver, -controller-manager, -scheduler, etcd, coredns
#            FROM nothing: the static binary plus a minimal /etc (passwd,
#            group, nsswitch.conf) and /tmp, as distroless has.
#   pause    berth's own static ./cmd/berth-pause as /pause, user 65535.
#   kube-proxy
#            needs iptables and conntrack at run time, so it sits on a
#            Debian bookworm minbase rootfs (debootstrap, cached as
#            _output/kind/kube-proxy-base/rootfs.tar and, when Docker is
#            there, imported as berth.dev/kube-proxy-base:bookworm) with
#            iptables, conntrack and nftables. iptables is wrapped, as
#            upstream's image does, so that kube-proxy uses the mode (legacy
#            or nft) the node's rules are already in.
#
# The etcd and coredns images carry kubeadm's tags, whatever version of the
# binary is inside: see the labels and hack/kind/README.md.
#
# Cached: an image tarball is rewritten only when its inputs (binaries,
# base rootfs, imgpack, arguments) change; imgpack's output is reproducible.
# The base rootfs is rebuilt only when its recipe changes. --docker-load also
# loads every tarball into the Docker Engine.
# Needs root (debootstrap) the first time. Builds run under `nice -n 10`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"
log() { printf '[control-plane-images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

docker_load=0
while [ $# -gt 0 ]; do
	case $1 in
	--docker-load) docker_load=1; shift ;;
	*) sed -n '2p' "$0" >&2; exit 2 ;;
	esac
done

out=$REPO_ROOT/_output/kind
tools=$out/tools
base_dir=$out/kube-proxy-base
base_tag=berth.dev/kube-proxy-base:bookworm
mirror=${KIND_BASE_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$KIND_IMAGES" "$tools" "$base_dir"
exec 9>"$KIND_IMAGES/.lock"
flock -n 9 || die "another control-plane-images.sh is running (lock $KIND_IMAGES/.lock)"
have_docker=0
command -v docker >/dev/null && docker version >/dev/null 2>&1 && have_docker=1
[ "$docker_load" = 0 ] || [ "$have_docker" = 1 ] || die "--docker-load: the Docker Engine is not reachable"

# The binaries must be there and built from the pinned versions.
need() { # need NAME SPEC
	[ -x "$KIND_BIN/$1" ] && [ "$(cat "$KIND_BIN/.$1.version" 2>/dev/null)" = "$2" ] ||
		die "$KIND_BIN/$1 is missing or not $2: run hack/kind/build-k8s.sh first"
}
for n in kubeadm kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
	need "$n" "k8s.io/kubernetes@$KIND_K8S_VERSION"
done
need etcd "go.etcd.io/etcd@$ETCD_VERSION"
need coredns "github.com/coredns/coredns@$COREDNS_VERSION"

# imgpack and berth-pause: plain go builds, cached by GOCACHE.
log "go build imgpack, berth-pause"
(cd "$here/k8s/imgpack" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
	go build -trimpath -o "$tools/imgpack" .)
(cd "$REPO_ROOT" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 \
	go build -trimpath -ldflags "-s -w" -o "$KIND_BIN/berth-pause" ./cmd/berth-pause)

summary=()
note() { summary+=("$*"); }

# ---- kube-proxy base rootfs ------------------------------------------------

# The wrapper installed as iptables, ip6tables and their -save and -restore:
# the same choice as kubernetes-sigs/iptables-wrappers makes. kubelet leaves a
# KUBE-IPTABLES-HINT (older ones a KUBE-KUBELET-CANARY) chain in the mangle
# table of the mode it uses; without one, the mode with more rules wins.
iptables_wrapper='#!/bin/sh
# iptables-wrapper (berth, hack/kind/control-plane-images.sh): on first use,
# pick the iptables mode the node uses, point Debian'"'"'s alternatives at it,
# and run the real command.
name=${0##*/}
base=${name%%-*}
suffix=${name#"$base"}
hint="^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)"
if { iptables-legacy-save -t mangle; ip6tables-legacy-save -t mangle; } 2>/dev/null | grep -qE "$hint"; then
	mode=legacy
elif { iptables-nft-save -t mangle; ip6tables-nft-save -t mangle; } 2>/dev/null | grep -qE "$hint"; then
	mode=nft
else
	legacy=$({ iptables-legacy-save; ip6tables-legacy-save; } 2>/dev/null | grep -c "^-")
	nft=$({ timeout 5 iptables-nft-save; timeout 5 ip6tables-nft-save; } 2>/dev/null | grep -c "^-")
	if [ "${legacy:-0}" -gt "${nft:-0}" ]; then mode=legacy; else mode=nft; fi
fi
update-alternatives --set iptables "/usr/sbin/iptables-$mode" >/dev/null 2>&1 || true
update-alternatives --set ip6tables "/usr/sbin/ip6tables-$mode" >/dev/null 2>&1 || true
exec "/usr/sbin/$base-$mode$suffix" "$@"
'
base_pkgs=iptables,conntrack,nftables
base_recipe="debootstrap --variant=minbase --include=$base_pkgs bookworm; wrapper $(printf '%s' "$iptables_wrapper" | sha256sum | cut -c1-16); rev 1"

build_base() {
	local rootfs=$base_dir/rootfs.tar t0=$SECONDS dir
	if [ -f "$rootfs" ] && [ "$(cat "$rootfs.recipe" 2>/dev/null)" = "$base_recipe" ]; then
		note "kube-proxy base rootfs: cached"
	else
		[ "$(id -u)" -eq 0 ] || die "building the kube-proxy base rootfs needs root (debootstrap)"
		command -v debootstrap >/dev/null || {
			log "apt-get install debootstrap"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
				{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
		}
		dir=$base_dir/rootfs.$$
		rm -rf "$dir"
		mkdir -p "$base_dir/debs"
		log "debootstrap --variant=minbase --include=$base_pkgs bookworm ($mirror)"
		nice -n 10 debootstrap --variant=minbase --include="$base_pkgs" --cache-dir="$base_dir/debs" \
			bookworm "$dir" "$mirror" >"$base_dir/debootstrap.log" 2>&1 ||
			{ tail -20 "$base_dir/debootstrap.log" >&2; rm -rf "$dir"; die "debootstrap failed (log: $base_dir/debootstrap.log)"; }
		printf '%s' "$iptables_wrapper" >"$dir/usr/sbin/iptables-wrapper"
		chmod 0755 "$dir/usr/sbin/iptables-wrapper"
		for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
			[ -L "$dir/etc/alternatives/$t" ] || die "rootfs has no alternative $t"
			ln -sfn /usr/sbin/iptables-wrapper "$dir/etc/alternatives/$t"
		done
		# Nothing kube-proxy needs: docs, manuals, translations, apt's lists
		# and caches, logs.
		rm -rf "$dir"/usr/share/{doc,man,info,locale}/* "$dir"/var/cache/apt/* \
			"$dir"/var/lib/apt/lists/* "$dir"/var/log/* "$dir"/var/cache/debconf/*-old
		tar --numeric-owner --sort=name --xattrs -C "$dir" \
			--exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$rootfs.tmp" .
		rm -rf "$dir"
		mv "$rootfs.tmp" "$rootfs"
		echo "$base_recipe" >"$rootfs.recipe"
		note "kube-proxy base rootfs: built in $((SECONDS - t0))s ($(du -m "$rootfs" | cut -f1) MB)"
	fi
	if [ "$have_docker" = 1 ]; then
		local sum have
		sum=$(sha256sum "$rootfs" | cut -d' ' -f1)
		have=$(docker image inspect -f '{{index .Config.Labels "dev.berth.rootfs-sha256"}}' "$base_tag" 2>/dev/null || true)
		if [ "$have" != "$sum" ]; then
			docker import --change "LABEL dev.berth.rootfs-sha256=$sum" \
				--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
				"$rootfs" "$base_tag" >/dev/null
			note "$base_tag: docker import"
		fi
	fi
}

# ---- images ---------------------------------------------------------------

path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
imgpack_sum=$(cat "$here/k8s/imgpack/main.go" "$here/k8s/imgpack/go.sum" | sha256sum | cut -c1-64)
index=$KIND_IMAGES/images.txt.tmp
: >"$index"

# pack REF VERSION NOTE IMGPACK-ARGS...: write REF's tarball unless it is
# already there for the same inputs. Every -file and -base source is hashed.
pack() {
	local ref=$1 ver=$2 why=$3 tar key a src id t0=$SECONDS
	shift 3
	local args=(-tag "$ref" -env "$path_env"
		-label "org.opencontainers.image.version=$ver"
		-label "org.opencontainers.image.source=https://github.com/berthdev/berth"
		-label "dev.berth.built-by=hack/kind/control-plane-images.sh"
		${why:+-label "dev.berth.note=$why"} "$@")
	tar=$KIND_IMAGES/$(echo "${ref#*/}" | tr ':/' '__').tar
	key=$({
		echo "$imgpack_sum"
		printf '%s\n' "${args[@]}"
		for a in "${args[@]}"; do
			case $a in
			/*=/*) src=${a#*=}; src=${src%:*}; sha256sum "$src" ;;
			*.tar) [ -f "$a" ] && sha256sum "$a" ;;
			esac
		done
	} | sha256sum | cut -c1-64)
	if [ -f "$tar" ] && [ "$(cat "$tar.key" 2>/dev/null)" = "$key" ]; then
		id=$(cat "$tar.id")
		note "$(printf '%-52s cached' "$ref")"
	else
		log "imgpack $ref"
		id=$(nice -n 10 "$tools/imgpack" -o "$tar" "${args[@]}")
		echo "$key" >"$tar.key"
		echo "$id" >"$tar.id"
		note "$(printf '%-52s packed in %ss' "$ref" $((SECONDS - t0)))"
	fi
	printf '%s %s %s\n' "$ref" "${tar#"$REPO_ROOT"/}" "$id" >>"$index"
	if [ "$docker_load" = 1 ] && [ "$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null)" != "$id" ]; then
		docker load -q -i "$tar" >/dev/null
	fi
}

refs=$("$KIND_BIN/kubeadm" config images list --kubernetes-version "$KIND_K8S_VERSION" 2>/dev/null) ||
	die "kubeadm config images list failed"
log "kubeadm $KIND_K8S_VERSION expects: $(echo $refs)"
static=(-etc -user 0)
for ref in $refs; do
	n=${ref##*/}; n=${n%%:*}
	case $n in
	kube-apiserver | kube-controller-manager | kube-scheduler)
		pack "$ref" "$KIND_K8S_VERSION" "" "${static[@]}" \
			-file "/usr/local/bin/$n=$KIND_BIN/$n:0755" -entrypoint "/usr/local/bin/$n" ;;
	kube-proxy)
		build_base
		pack "$ref" "$KIND_K8S_VERSION" "" -base "$base_dir/rootfs.tar" -user 0 \
			-file "/usr/local/bin/kube-proxy=$KIND_BIN/kube-proxy:0755" -entrypoint /usr/local/bin/kube-proxy ;;
	etcd)
		# kubeadm's etcd tag is <version>-<image revision>.
		tag=${ref##*:}
		why=""
		[ "v${tag%-*}" = "$ETCD_VERSION" ] || why="tagged $tag for kubeadm; holds etcd $ETCD_VERSION"
		pack "$ref" "$ETCD_VERSION" "$why" "${static[@]}" \
			-file "/usr/local/bin/etcd=$KIND_BIN/etcd:0755" -file "/usr/local/bin/etcdctl=$KIND_BIN/etcdctl:0755" \
			-entrypoint /usr/local/bin/etcd ;;
	coredns)
		# Runs as root: kubeadm's Deployment drops every capability but
		# NET_BIND_SERVICE, which a non-root user would only keep through a
		# file capability on /coredns, as upstream's image has.
		tag=${ref##*:}
		why=""
		[ "$tag" = "$COREDNS_VERSION" ] || why="tagged $tag for kubeadm; holds CoreDNS $COREDNS_VERSION"
		pack "$ref" "$COREDNS_VERSION" "$why" "${static[@]}" -file "/coredns=$KIND_BIN/coredns:0755" \
			-entrypoint /coredns -expose 53/tcp -expose 53/udp -expose 9153/tcp ;;
	pause)
		pack "$ref" "berth-pause" "tagged ${ref##*:} for kubeadm; holds berth's ./cmd/berth-pause" \
			-file "/pause=$KIND_BIN/berth-pause:0755" -entrypoint /pause -user 65535:65535 ;;
	*) die "kubeadm lists $ref, which this script does not know how to build" ;;
	esac
done
mv "$index" "$KIND_IMAGES/images.txt"

for line in "${summary[@]}"; do log "$line"; done
while read -r ref tar id; do
	log "$(printf '%-52s %6s MB  %s' "$ref" "$(du -m "$REPO_ROOT/$tar" | cut -f1)" "$tar")"
done <"$KIND_IMAGES/images.txt"
