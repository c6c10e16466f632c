# versions.sh: every pinned version and shared path for hack/ scripts.
# Sourced, never executed.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_BIN=${TOOLS_BIN:-$REPO_ROOT/_output/tools}
CNITOOL_VERSION=v1.3.1
REF_PLUGINS_VERSION=v1.9.1
export PATH="$TOOLS_BIN:/usr/local/go/bin:$PATH"
# CRI stack (issue 4). Built from the Go module proxy into a directory outside
# the checkout, so a fresh clone on the same machine reuses them, and outside
# PATH, so Docker's own containerd and runc are never shadowed.
CRI_TOOLS_BIN=${CRI_TOOLS_BIN:-/opt/berth/bin}
CONTAINERD_VERSION=v2.2.9
RUNC_VERSION=v1.4.3
CRI_TOOLS_VERSION=v1.36.0
GINKGO_VERSION=v2.28.1
REGISTRY_VERSION=v3.1.2
# CSI sidecars for berth-csi (hack/csi-images.sh), built by copying each
# module's source out of the module cache. node-driver-registrar and
# livenessprobe are not needed: berth-csi registers itself with kubelet and
# serves /healthz.
CSI_PROVISIONER_VERSION=v6.3.0
CSI_RESIZER_VERSION=v1.14.0
CSI_SNAPSHOTTER_VERSION=v8.7.0
CSI_IMAGE_PREFIX=${CSI_IMAGE_PREFIX:-berth.dev}
# kind node image (hack/kind/base-image.sh, hack/kind/node-image.sh). The base
# is a debootstrap rootfs; bump KIND_BASE_REV to force a new one. The node
# image is built for this Kubernetes version from _output/kind/bin.
KIND_VERSION=v0.33.0
KIND_BASE_SUITE=bookworm
KIND_BASE_MIRROR=${KIND_BASE_MIRROR:-http://deb.debian.org/debian}
KIND_BASE_REV=1
KIND_BASE_IMAGE=${KIND_BASE_IMAGE:-berth.dev/kind-base:bookworm}
KIND_ROOTFS_CACHE=${KIND_ROOTFS_CACHE:-$REPO_ROOT/_output/kind/rootfs-cache}
KIND_K8S_VERSION=${KIND_K8S_VERSION:-v1.36.3}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-berth.dev/kind-node:$KIND_K8S_VERSION}
KIND_OUTPUT=${KIND_OUTPUT:-$REPO_ROOT/_output/kind}
# kind clusters: Kubernetes ($KIND_K8S_VERSION), etcd, CoreDNS and the kind
# CLI ($KIND_VERSION) built by hack/kind/build-k8s.sh into $KIND_BIN, and the
# control-plane images packed from them by hack/kind/control-plane-images.sh
# into $KIND_IMAGES. The Kubernetes and etcd versions are also the require
# lines of hack/kind/k8s/go.mod and hack/kind/k8s/etcd/go.mod; the scripts
# refuse to run when they disagree.
KIND_BIN=${KIND_BIN:-$KIND_OUTPUT/bin}
KIND_IMAGES=${KIND_IMAGES:-$KIND_OUTPUT/images}
ETCD_VERSION=v3.6.8
COREDNS_VERSION=v1.15.0
KIND_CNI_PLUGINS_VERSION=${KIND_CNI_PLUGINS_VERSION:-v1.9.1} # reference CNI plugins in the kind node image
