#!/usr/bin/env bash
# node-image.sh [--runtime-only]: build berth's kind node image,
# $KIND_NODE_IMAGE (berth.dev/kind-node:v1.36.3), offline:
#
#   FROM $KIND_BASE_IMAGE (hack/kind/base-image.sh, built when missing)
#   + hack/kind/node/rootfs   entrypoint, systemd units, containerd config,
#                             /kind/bin helpers and /kind/manifests
#   + containerd, containerd-shim-runc-v2, ctr, runc, crictl
#                             from $CRI_TOOLS_BIN (hack/install-cri-tools.sh)
#   + kubelet, kubeadm, kubectl from $KIND_BIN (hack/kind/build-k8s.sh)
#   + bridge, host-local, loopback, portmap, bandwidth: the reference CNI
#     plugins at $KIND_CNI_PLUGINS_VERSION, go-installed into $KIND_OUTPUT/cni
#   + every image tarball in $KIND_IMAGES (hack/kind/control-plane-images.sh),
#     preloaded the way `kind build node-image` does it: run the built image
#     with containerd started by hand, `ctr -n k8s.io images import` (content
#     only, pinned), stop containerd, `docker commit`.
#
# --runtime-only builds $KIND_NODE_IMAGE_RUNTIME (no Kubernetes binaries, no
# preload) for smoke-testing the boot path before Kubernetes is built.
#
# The image is rebuilt only when an input changed: a digest of every input is
# kept in the image label dev.berth.kind.inputs. KIND_NODE_REBUILD=1 forces.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"
log() { printf '[kind-node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

KIND_BIN=${KIND_BIN:-$KIND_OUTPUT/bin}
KIND_IMAGES=${KIND_IMAGES:-$KIND_OUTPUT/images}
KIND_NODE_IMAGE_RUNTIME=${KIND_NODE_IMAGE_RUNTIME:-${KIND_NODE_IMAGE%:*}:runtime-only}
CNI_SRC=${CNI_SRC:-$KIND_OUTPUT/cni}
cni_plugins=(bridge host-local loopback portmap bandwidth)
cri_bins=(containerd containerd-shim-runc-v2 ctr runc crictl)
k8s_bins=(kubelet kubeadm kubectl)

runtime_only=0
case "${1:-}" in
"") ;;
--runtime-only) runtime_only=1 ;;
*) sed -n '2,3p' "$0" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v docker >/dev/null && docker version >/dev/null 2>&1 || die "the Docker Engine is not reachable"

image=$KIND_NODE_IMAGE
[ $runtime_only = 0 ] || image=$KIND_NODE_IMAGE_RUNTIME

# --- inputs -----------------------------------------------------------------
if [ $runtime_only = 0 ]; then
	missing=()
	for b in "${k8s_bins[@]}"; do [ -x "$KIND_BIN/$b" ] || missing+=("$b"); done
	[ ${#missing[@]} -eq 0 ] || die "Kubernetes binaries missing from $KIND_BIN: ${missing[*]}." \
		"Build them first with hack/kind/build-k8s.sh (or pass --runtime-only)."
	have=$("$KIND_BIN/kubelet" --version | awk '{print $2}')
	[ "$have" = "$KIND_K8S_VERSION" ] || die "$KIND_BIN/kubelet is $have, not $KIND_K8S_VERSION: rerun hack/kind/build-k8s.sh"
fi

for b in "${cri_bins[@]}"; do
	[ -x "$CRI_TOOLS_BIN/$b" ] && continue
	log "$CRI_TOOLS_BIN/$b missing: running hack/install-cri-tools.sh"
	bash "$REPO_ROOT/hack/install-cri-tools.sh"
	break
done
for b in "${cri_bins[@]}"; do [ -x "$CRI_TOOLS_BIN/$b" ] || die "$CRI_TOOLS_BIN/$b still missing"; done

bash "$here/base-image.sh"

tarballs=()
if [ $runtime_only = 0 ] && [ -d "$KIND_IMAGES" ]; then
	# control-plane-images.sh holds this lock while it writes tarballs;
	# keep them stable (shared lock) until the image is committed
	if [ -e "$KIND_IMAGES/.lock" ]; then
		exec 8<"$KIND_IMAGES/.lock"
		flock -s -w 1800 8 || die "hack/kind/control-plane-images.sh still holds $KIND_IMAGES/.lock"
	fi
	shopt -s nullglob
	tarballs=("$KIND_IMAGES"/*.tar)
	shopt -u nullglob
fi
[ $runtime_only = 1 ] || [ ${#tarballs[@]} -gt 0 ] ||
	log "WARNING: no image tarballs in $KIND_IMAGES (hack/kind/control-plane-images.sh): kubeadm init would have to pull"

# --- staging context and cache key ------------------------------------------
stage=$(mktemp -d "${TMPDIR:-/tmp}/kind-node.XXXXXX")
build_ctr=""
cleanup() {
	[ -z "$build_ctr" ] || docker rm -f -v "$build_ctr" >/dev/null 2>&1 || true
	rm -rf "$stage"
}
trap cleanup EXIT
payload=$stage/payload
mkdir -p "$payload/usr/local/bin" "$payload/usr/local/sbin" "$payload/usr/bin" "$payload/opt/cni/bin"
cp -a "$here/node/rootfs" "$stage/rootfs"
cp "$here/node/Dockerfile" "$stage/Dockerfile"
# The berth recipe (hack/kind/berth): berth-cri, off unless the cluster's
# kind config mounts /etc/berth/recipe-berth. kubelet shows the runtime
# version only when it parses as semver ("dev" shows as "Unknown").
mkdir -p "$stage/rootfs/etc/berth" "$stage/rootfs/etc/systemd/system/containerd.service.d"
install -m 0644 "$here/berth/berth-cri.service" "$stage/rootfs/etc/systemd/system/berth-cri.service"
install -m 0644 "$here/berth/10-berth-recipe.conf" "$stage/rootfs/etc/systemd/system/containerd.service.d/10-berth-recipe.conf"
install -m 0644 "$here/berth/cri.toml" "$stage/rootfs/etc/berth/cri.toml"
install -m 0644 "$here/berth/containerd-berth.toml" "$stage/rootfs/etc/berth/containerd-berth.toml"
(cd "$REPO_ROOT" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w -X main.version=0.1.0-dev" \
	-o "$payload/usr/local/bin/berth-cri" ./cmd/berth-cri) || die "go build ./cmd/berth-cri failed"
for b in "${cri_bins[@]}"; do
	dst=$payload/usr/local/bin
	[ "$b" != runc ] || dst=$payload/usr/local/sbin
	install -m 0755 "$CRI_TOOLS_BIN/$b" "$dst/$b"
done
# The reference plugins at $KIND_CNI_PLUGINS_VERSION, not Debian's 1.1.1:
# those predate CNI 1.1's STATUS verb and fail it ("missing containerID"),
# which a 1.1.0 conflist (berth's) makes the runtime call.
for p in "${cni_plugins[@]}"; do
	if [ ! -x "$CNI_SRC/$p" ]; then
		case $p in host-local) pkg=ipam/$p ;; portmap | bandwidth) pkg=meta/$p ;; *) pkg=main/$p ;; esac
		log "go install containernetworking/plugins $pkg@$KIND_CNI_PLUGINS_VERSION"
		(cd / && CGO_ENABLED=0 GOBIN=$CNI_SRC GOFLAGS=-buildvcs=false go install -ldflags "-s -w" \
			"github.com/containernetworking/plugins/plugins/$pkg@$KIND_CNI_PLUGINS_VERSION") || die "building CNI plugin $p failed"
	fi
	install -m 0755 "$CNI_SRC/$p" "$payload/opt/cni/bin/$p"
done
if [ $runtime_only = 0 ]; then
	for b in "${k8s_bins[@]}"; do install -m 0755 "$KIND_BIN/$b" "$payload/usr/bin/$b"; done
fi

base_id=$(docker image inspect -f '{{.Id}}' "$KIND_BASE_IMAGE")
inputs=$( {
	echo "base $base_id k8s ${KIND_K8S_VERSION} runtime_only $runtime_only"
	(cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
	for t in "${tarballs[@]}"; do echo "$(basename "$t") $(stat -c '%s %Y' "$t")"; done
} | sha256sum | cut -c1-16)
if [ "${KIND_NODE_REBUILD:-0}" != 1 ] &&
	[ "$(docker image inspect -f '{{index .Config.Labels "dev.berth.kind.inputs"}}' "$image" 2>/dev/null)" = "$inputs" ]; then
	log "up to date: $image (inputs $inputs)"
	exit 0
fi

# --- docker build -----------------------------------------------------------
start=$SECONDS
stage_tag="$image-build"
[ ${#tarballs[@]} -gt 0 ] || stage_tag=$image
log "docker build $stage_tag FROM $KIND_BASE_IMAGE"
buildlog=$KIND_OUTPUT/node-image.build.log
mkdir -p "$KIND_OUTPUT"
docker build --network=none \
	--build-arg "BASE_IMAGE=$KIND_BASE_IMAGE" \
	--build-arg "KUBERNETES_VERSION=$([ $runtime_only = 1 ] || echo "$KIND_K8S_VERSION")" \
	--label "dev.berth.kind.inputs=$inputs" \
	-t "$stage_tag" "$stage" >"$buildlog" 2>&1 ||
	{ tail -n 30 "$buildlog" >&2; die "docker build failed (log: $buildlog)"; }
log "docker build took $((SECONDS - start))s"

# --- preload images (kind's nodeimage approach) -----------------------------
if [ ${#tarballs[@]} -gt 0 ]; then
	start=$SECONDS
	build_ctr=berth-kind-node-build-$$
	docker run -d --name "$build_ctr" --network=none --entrypoint=sleep \
		--security-opt seccomp=unconfined "$stage_tag" infinity >/dev/null
	# /var/lib/containerd is part of the container's rootfs here (no volume),
	# so what containerd writes is what `docker commit` keeps. Only the
	# content store and metadata are written (--no-unpack): the snapshotter
	# is chosen per node at boot and CRI unpacks on first use.
	docker exec "$build_ctr" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
	docker exec "$build_ctr" bash -c 'for i in $(seq 1 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /tmp/containerd.log >&2; exit 1' ||
		die "containerd did not start in the build container"
	for t in "${tarballs[@]}"; do
		log "preloading $(basename "$t")"
		# stderr only on failure: ctr warns about cgroup v1 on every call here
		docker exec -i "$build_ctr" bash -c 'ctr --namespace=k8s.io images import \
			--label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - \
			>/dev/null 2>/tmp/import.err || { cat /tmp/import.err >&2; exit 1; }' <"$t" ||
			die "ctr images import $(basename "$t") failed"
	done
	preloaded=$(docker exec "$build_ctr" ctr --namespace=k8s.io images list -q 2>/dev/null | grep -v -e '@sha256:' -e '^sha256:' | sort)
	pause=$(docker exec "$build_ctr" sed -n "s/^[[:space:]]*sandbox[[:space:]]*=[[:space:]]*'\(.*\)'/\1/p" /etc/containerd/config.toml)
	grep -qx "$pause" <<<"$preloaded" || log "WARNING: sandbox image $pause is not among the preloaded images"
	if [ -x "$KIND_BIN/kubeadm" ]; then
		for want in $("$KIND_BIN/kubeadm" config images list --kubernetes-version "$KIND_K8S_VERSION" 2>/dev/null); do
			grep -qx "$want" <<<"$preloaded" || log "WARNING: kubeadm needs $want, which is not preloaded"
		done
	fi
	# stop containerd cleanly (bolt db closed), then drop its runtime state
	docker exec "$build_ctr" bash -c 'pkill -TERM -x containerd; for i in $(seq 1 50); do pgrep -x containerd >/dev/null || break; sleep 0.2; done
		rm -rf /run/containerd /tmp/* /var/lib/containerd/tmpmounts /var/lib/containerd/io.containerd.snapshotter.v1.*/snapshots/*'
	docker commit \
		--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
		--change 'CMD []' \
		--change "LABEL dev.berth.kind.inputs=$inputs" \
		"$build_ctr" "$image" >/dev/null
	docker rm -f -v "$build_ctr" >/dev/null
	build_ctr=""
	docker rmi "$stage_tag" >/dev/null 2>&1 || true
	log "preloaded $(wc -l <<<"$preloaded") images in $((SECONDS - start))s:"
	sed 's/^/[kind-node]   /' <<<"$preloaded" >&2
fi

log "built $image ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec))"
