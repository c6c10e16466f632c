#!/usr/bin/env bash
# cluster.sh create|delete [--recipe berth|reference] [--name NAME] [--workers N]
#
# Creates (or deletes) a kind cluster from berth's node image
# ($KIND_NODE_IMAGE), through hack/kind/docker-shim (kind's --privileged
# cannot start on this machine; see that file). Recipes:
#   berth      kubelet → berth-cri (unix:///run/berth/cri.sock); no default
#              CNI: berth-cni and berth-netd come from cni/deploy
#   reference  kubelet → containerd's own CRI, the node image's default CNI
#              and hostPath storage: the baseline for every comparison.
#              - CNI: kind applies the node image's
#                /kind/manifests/default-cni.yaml (kindnetd's image cannot be
#                pulled here), which switches on kind-bridge-cni.service in
#                every node: a bridge + host-local conflist on the node's
#                spec.podCIDR, then portmap and bandwidth (the reference
#                plugins v1.9.1 in /opt/cni/bin; containerd brings up lo with
#                the loopback plugin), a route to every other node's podCIDR
#                via its InternalIP, and masquerading of pod traffic leaving
#                the pod subnet.
#              - storage: the default StorageClass "standard" is the in-tree
#                kubernetes.io/host-path provisioner (kind starts
#                kube-controller-manager with --enable-hostpath-provisioner),
#                no image needed. Its volumes are directories under
#                /tmp/hostpath_pv on the pod's node; /tmp is a tmpfs in a kind
#                node, so each node's /tmp/hostpath_pv is bind-mounted from
#                $KIND_OUTPUT/hostpath/<cluster>/<node> on the host disk.
#              create waits until every node is Ready and CoreDNS runs.
# Idempotent: an existing cluster of that name is kept. The kubectl context
# is kind-<name>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"
log() { printf '[kind-cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

action=${1:-}
shift || true
recipe=berth name=berth workers=2
while [ $# -gt 0 ]; do
	case $1 in
	--recipe) recipe=$2; shift 2 ;;
	--name) name=$2; shift 2 ;;
	--workers) workers=$2; shift 2 ;;
	*) sed -n '2p' "$0" >&2; exit 2 ;;
	esac
done
case $recipe in berth | reference) ;; *) die "--recipe must be berth or reference" ;; esac
export PATH=$here/docker-shim:$KIND_OUTPUT/bin:$PATH
command -v kind >/dev/null || die "kind is not built: run hack/kind/build-k8s.sh"

case $action in
delete)
	kind delete cluster --name "$name"
	# the reference recipe's hostPath volumes (directories made by pods,
	# possibly as other users)
	rm -rf "${KIND_OUTPUT:?}/hostpath/$name"
	exit 0
	;;
create) ;;
*) sed -n '2p' "$0" >&2; exit 2 ;;
esac

if kind get clusters 2>/dev/null | grep -qx "$name"; then
	log "cluster $name exists; keeping it"
	exit 0
fi
docker image inspect "$KIND_NODE_IMAGE" >/dev/null 2>&1 || die "node image $KIND_NODE_IMAGE is missing: run hack/kind/node-image.sh"

cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
mount=""
if [ "$recipe" = berth ]; then
	mount="  extraMounts:
  - hostPath: $here/berth/recipe-berth
    containerPath: /etc/berth/recipe-berth
    readOnly: true"
fi
# mounts_for NODE: the extraMounts of one node
mounts_for() {
	if [ "$recipe" = reference ]; then
		local dir=$KIND_OUTPUT/hostpath/$name/$1
		mkdir -p "$dir"
		printf '  extraMounts:\n  - hostPath: %s\n    containerPath: /tmp/hostpath_pv\n' "$dir"
	elif [ -n "$mount" ]; then
		echo "$mount"
	fi
}
{
	cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: $name
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/16
EOF
	[ "$recipe" = berth ] && echo "  disableDefaultCNI: true"
	echo "nodes:"
	echo "- role: control-plane"
	mounts_for control-plane
	for i in $(seq "$workers"); do
		echo "- role: worker"
		mounts_for "worker$i"
	done
	# kubelet >= 1.35 refuses cgroup v1 unless told; this machine is v1 hybrid.
	cat <<'EOF'
kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false
EOF
	if [ "$recipe" = berth ]; then
		cat <<'EOF'
- |
  kind: KubeletConfiguration
  containerRuntimeEndpoint: unix:///run/berth/cri.sock
- |
  kind: InitConfiguration
  nodeRegistration:
    criSocket: unix:///run/berth/cri.sock
- |
  kind: JoinConfiguration
  nodeRegistration:
    criSocket: unix:///run/berth/cri.sock
EOF
	fi
} >"$cfg"
log "kind create cluster --name $name ($recipe recipe, 1 control plane + $workers workers)"
start=$SECONDS
# kind makes the new cluster kubectl's current context; a second cluster
# (the reference one) must not take it from the first.
prev_ctx=$(kubectl config current-context 2>/dev/null || true)
kind create cluster --name "$name" --image "$KIND_NODE_IMAGE" --config "$cfg" --wait 0s
log "created in $((SECONDS - start))s"
if [ -n "$prev_ctx" ] && [ "$prev_ctx" != "kind-$name" ]; then
	kubectl config use-context "$prev_ctx" >/dev/null
	log "kubectl current context stays $prev_ctx"
fi
if [ "$recipe" = reference ]; then
	# The network is the image's own (no deploy step follows), so the
	# cluster is usable once every node is Ready and CoreDNS runs.
	ctx=kind-$name
	kubectl --context "$ctx" wait --for=condition=Ready nodes --all --timeout=300s
	kubectl --context "$ctx" -n kube-system rollout status deployment/coredns --timeout=300s
	log "reference cluster $name ready in $((SECONDS - start))s (context $ctx)"
fi
