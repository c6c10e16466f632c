#!/usr/bin/env bash
# cni-images.sh [--no-save]
#
# Builds berth.dev/berth-cni:dev, the image cni/deploy runs, offline and FROM
# scratch: the berth CNI plugin (copied onto each node by the init
# container) and berth-netd, both static. An image built from the same two
# binaries is kept. Unless --no-save, the image is also saved as a
# docker-archive under _output/images/ for `kind load image-archive`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
log() { printf '[cni-images] %s\n' "$*" >&2; }
save=1
[ "${1:-}" = --no-save ] && save=0

tag=berth.dev/berth-cni:dev
bin=$repo/_output/bin
mkdir -p "$bin" "$repo/_output/images"
command -v docker >/dev/null || { log "docker is not installed"; exit 1; }
for p in berth-cni:berth berth-netd:berth-netd; do
	(cd "$repo" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 \
		go build -trimpath -ldflags "-s -w" -o "$bin/${p#*:}" "./cmd/${p%%:*}")
done
sum=$(cat "$bin/berth" "$bin/berth-netd" | sha256sum | cut -d' ' -f1)
have=$(docker image inspect -f '{{index .Config.Labels "dev.berth.binary-sha256"}}' "$tag" 2>/dev/null || true)
if [ "$have" != "$sum" ]; then
	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' EXIT
	cp "$bin/berth" "$bin/berth-netd" "$ctx/"
	printf '%s\n' 'FROM scratch' \
		'COPY berth berth-netd /usr/local/bin/' \
		'ENV PATH=/usr/local/bin' \
		"LABEL org.opencontainers.image.source=\"github.com/berthdev/berth\" dev.berth.binary-sha256=\"$sum\"" \
		'ENTRYPOINT ["/usr/local/bin/berth-netd"]' >"$ctx/Dockerfile"
	docker build -q -t "$tag" "$ctx" >/dev/null
	log "built $tag"
else
	log "$tag is up to date"
fi
if [ "$save" = 1 ]; then
	docker save -o "$repo/_output/images/berth-cni_dev.tar" "$tag"
	log "saved _output/images/berth-cni_dev.tar"
fi
