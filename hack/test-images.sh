#!/usr/bin/env bash
# test-images.sh [--registry HOST:PORT] [--hosts-dir DIR] [--root DIR]
#
# Makes every image critest needs pullable under its public name, with no
# network beyond Debian's apt mirror:
#   1. caches Debian's busybox and libc6 (.debs and their dpkg -x tree)
#      under $BERTH_IMAGE_CACHE (default /var/cache/berth/test-images);
#   2. starts the local registry (hack/registry.sh start; --root is its
#      storage, default /var/lib/berth/registry);
#   3. builds and pushes the images (go run ./hack/testimages; images the
#      registry already holds with the same digest are skipped);
#   4. writes DIR/_default/hosts.toml (default /etc/berth/certs.d), which
#      makes containerd's CRI and berth-cri (registry config_path = DIR)
#      resolve and pull every registry's names through the local registry.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
log() { printf '[test-images] %s\n' "$*" >&2; }

addr=127.0.0.1:5000
hosts_dir=/etc/berth/certs.d
root_args=()
while [ $# -gt 0 ]; do
	case $1 in
	--registry) addr=${2:?}; shift 2 ;;
	--hosts-dir) hosts_dir=${2:?}; shift 2 ;;
	--root) root_args=(--root "${2:?}"); shift 2 ;;
	*) sed -n '2p' "$0" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }

# Debian's busybox (dynamically linked; see hack/testimages/debroot.go for
# why not busybox-static) and the libc6 it runs on, unpacked into one tree.
# The .debs stay cached; delete $cache to pick up newer ones.
cache=${BERTH_IMAGE_CACHE:-/var/cache/berth/test-images}
debroot=$cache/debroot
if [ ! -x "$debroot/bin/busybox" ]; then
	mkdir -p "$cache"
	for pkg in busybox libc6; do
		ls "$cache/${pkg}"_*.deb >/dev/null 2>&1 && continue
		log "apt-get download $pkg"
		dl=$(mktemp -d)
		# apt drops privileges to _apt for downloads; let it write here.
		chown _apt "$dl" 2>/dev/null || true
		(cd "$dl" && apt-get download -qq "$pkg" 2>/dev/null) ||
			{ apt-get update -qq && (cd "$dl" && apt-get download -qq "$pkg"); }
		mv "$dl/${pkg}"_*.deb "$cache/"
		rm -rf "$dl"
	done
	rm -rf "$debroot.tmp"
	for deb in "$cache"/busybox_*.deb "$cache"/libc6_*.deb; do
		dpkg -x "$deb" "$debroot.tmp"
		log "unpacked $(basename "$deb")"
	done
	rm -rf "$debroot"
	mv "$debroot.tmp" "$debroot"
fi

"$here/registry.sh" start --addr "$addr" "${root_args[@]}"

(cd "$REPO_ROOT" && GOFLAGS=-buildvcs=false go run ./hack/testimages \
	--registry "$addr" --debroot "$debroot" --repo "$REPO_ROOT")

# Only the mirror, no server line: for a name that is not in the local
# registry containerd then falls back to the real host, which fails fast
# offline and works where the network allows it.
mkdir -p "$hosts_dir/_default"
tmp=$(mktemp "$hosts_dir/_default/.hosts.toml.XXXXXX")
cat >"$tmp" <<TOML
# Written by hack/test-images.sh: every registry is served by the local
# test registry (hack/registry.sh), which holds critest's images.
[host."http://$addr"]
  capabilities = ["pull", "resolve"]
TOML
chmod 0644 "$tmp"
mv -f "$tmp" "$hosts_dir/_default/hosts.toml"
log "mirror config: $hosts_dir/_default/hosts.toml -> http://$addr"
