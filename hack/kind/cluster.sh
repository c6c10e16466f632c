#!/usr/bin/env bash
# cluster.sh create|delete [--recipe berth|reference] [--name NAME] [--workers N]
#
# Creates (or deletes) a kind cluster from berth's node image
# ($KIND_NODE_IMAGE), through hack/kind/docker-shim (kind's --privileged
# cannot start on this machine; see that file). Recipes:
#   berth      kubelet → berth-cri (unix:///run/berth/cri.sock); no default
#              CNI: berth-cni and berth-netd come from cni/deploy
#   reference  kubelet → containerd's own CRI, the node image's bridge +
#              host-local CNI and hostPath storage: the baseline
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
	[ -z "$mount" ] || echo "$mount"
	for _ in $(seq "$workers"); do
		echo "- role: worker"
		[ -z "$mount" ] || echo "$mount"
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
kind create cluster --name "$name" --image "$KIND_NODE_IMAGE" --config "$cfg" --wait 0s
log "created in $((SECONDS - start))s"
