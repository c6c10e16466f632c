#!/usr/bin/env bash
# test-images.sh: the standard test images berth's kind node preloads under
# their usual names, built offline into $KIND_OUTPUT/images as
# docker-archive tarballs (hack/kind/node-image.sh preloads every tarball
# there). Manifests and tests can then use them as in any cluster.
#
#   registry.k8s.io/e2e-test-images/busybox:1.29-2   Debian's busybox-static
#       (1.35) with every applet linked into /bin: sh, nc (with -l), wget,
#       nslookup, ping, sleep ...
#
# Rebuilt only when the busybox binary changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"
log() { printf '[kind-test-images] %s\n' "$*" >&2; }
out=$KIND_OUTPUT/images
mkdir -p "$out"
if [ ! -x /bin/busybox ] || ! /bin/busybox --list | grep -qx nc; then
	log "apt-get install busybox-static"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null
fi
tag=registry.k8s.io/e2e-test-images/busybox:1.29-2
tar=$out/busybox_1.29-2.tar
sum=$(sha256sum /bin/busybox | cut -d' ' -f1)
if [ -f "$tar" ] && [ "$(cat "$tar.key" 2>/dev/null)" = "$sum" ]; then
	log "$tag is up to date"
	exit 0
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -sf busybox "$ctx/rootfs/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$ctx/rootfs/etc/group"
printf '%s\n' 'FROM scratch' 'COPY rootfs/ /' 'ENV PATH=/bin' 'CMD ["sh"]' >"$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx" >/dev/null
docker save -o "$tar.tmp" "$tag"
mv "$tar.tmp" "$tar"
echo "$sum" >"$tar.key"
log "built $tag into ${tar#"$REPO_ROOT"/}"
