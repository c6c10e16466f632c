#!/usr/bin/env bash
# base-image.sh: the Debian bookworm root filesystem that berth's kind node
# image (hack/kind/node-image.sh) is built FROM. Docker here cannot pull, so
# the rootfs comes from debootstrap against Debian's apt mirror and is turned
# into an image with `docker import`.
#
#   berth.dev/kind-base:bookworm-<stamp>   the cache key (packages, suite,
#                                          mirror, KIND_BASE_REV, import options)
#   berth.dev/kind-base:bookworm           moving tag, what node-image.sh uses
#
# Cached at three levels, cheapest first:
#   1. the stamped image exists             -> only re-tag
#   2. $KIND_ROOTFS_CACHE/<stamp>.tar exists -> only docker import
#   3. otherwise debootstrap, with the .debs kept in $KIND_ROOTFS_CACHE/debs
#      so a cold rootfs after a cache wipe of (1)+(2) skips the downloads.
# Set KIND_BASE_REBUILD=1 to ignore levels 1 and 2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"
log() { printf '[kind-base] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "must run as root (debootstrap)"; exit 1; }

suite=$KIND_BASE_SUITE
mirror=$KIND_BASE_MIRROR
# Everything kind's create actions and kubelet/kubeadm call inside a node:
# systemd as PID 1, iptables/nftables/ebtables/conntrack/socat/ethtool for
# kube-proxy and kubeadm preflight, mount/util-linux (nsenter, findmnt),
# fuse3 for berth-csi, kmod/procps for preflight, libseccomp2 for runc, and
# curl/jq for debugging and health checks.
pkgs=(
	systemd systemd-sysv dbus
	iptables nftables ebtables conntrack socat ethtool iproute2
	mount util-linux fuse3 kmod procps libseccomp2
	ca-certificates bash curl jq
)
include=$(IFS=,; echo "${pkgs[*]}")
# image metadata set by docker import (no CMD: the node image sets its own)
import_changes=(--change 'ENV container=docker')
rootfs_stamp=$(printf '%s\n' "$KIND_BASE_REV" "$suite" "$mirror" "$include" | sha256sum | cut -c1-12)
stamp=$(printf '%s\n' "$rootfs_stamp" "${import_changes[@]}" | sha256sum | cut -c1-12)
image=$KIND_BASE_IMAGE
stamped="$image-$stamp"
cache=$KIND_ROOTFS_CACHE
tarball="$cache/$suite-$rootfs_stamp.tar"

if [ "${KIND_BASE_REBUILD:-0}" != 1 ] && docker image inspect "$stamped" >/dev/null 2>&1; then
	docker tag "$stamped" "$image"
	log "cached: $stamped"
	exit 0
fi

mkdir -p "$cache/debs"
if [ "${KIND_BASE_REBUILD:-0}" = 1 ] || [ ! -s "$tarball" ]; then
	command -v debootstrap >/dev/null || {
		log "apt-get install debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
	}
	root="$cache/rootfs.$$"
	trap 'rm -rf "$root" "$tarball.tmp"' EXIT
	rm -rf "$root"
	start=$SECONDS
	log "debootstrap --variant=minbase $suite from $mirror"
	debootstrap --variant=minbase --cache-dir="$cache/debs" \
		--include="$include" "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -20 "$cache/debootstrap.log" >&2; log "debootstrap failed (log: $cache/debootstrap.log)"; exit 1; }
	log "debootstrap took $((SECONDS - start))s"

	# Trim: package caches and lists (the node never runs apt), docs, logs,
	# and the machine identity, which must be generated per node.
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
		"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
		"$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/*
	# debootstrap copies the build host's resolv.conf and hostname; Docker
	# bind-mounts its own over both at run time.
	: >"$root/etc/machine-id"
	rm -f "$root/var/lib/dbus/machine-id"
	: >"$root/etc/resolv.conf"
	echo kind-node >"$root/etc/hostname"

	tar --numeric-owner --xattrs -C "$root" -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	rm -rf "$root"
	trap - EXIT
fi

log "docker import $tarball -> $stamped"
docker import "${import_changes[@]}" \
	--message "berth kind base: debootstrap $suite minbase ($include)" \
	"$tarball" "$stamped" >/dev/null
docker tag "$stamped" "$image"
log "built $stamped ($(docker image inspect -f '{{.Size}}' "$stamped" | numfmt --to=iec))"
