#!/usr/bin/env bash
# up.sh: `make up`. Builds or reuses everything offline, creates the kind
# cluster "berth" (1 control plane, 2 workers; kubectl context kind-berth)
# whose nodes run berth-cri, deploys berth-cni/berth-netd and berth-csi, and
# runs a short demo. Idempotent: every step reuses what exists. A failure
# names its step.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../versions.sh
. "$repo/hack/versions.sh"
export PATH=$here/docker-shim:$KIND_OUTPUT/bin:$PATH
NAME=${BERTH_CLUSTER:-berth}
CTX=kind-$NAME
step=""
t0=$SECONDS
log() { printf '\033[1m[up]\033[0m %s\n' "$*" >&2; }
on_err() { log "FAILED in step: $step (see the output above). Rerun 'make up' after fixing it; finished steps are reused."; }
trap on_err ERR
run() { step=$1; shift; local s=$SECONDS; log "$step"; "$@"; log "  done in $((SECONDS - s))s"; }
k() { kubectl --context "$CTX" "$@"; }

[ "$(id -u)" -eq 0 ] || { log "make up must run as root"; exit 1; }

# On a cgroup v1 host that leaves some controllers unmounted (this machine:
# hugetlb, perf_event, net_cls,net_prio), a kind node's systemd creates
# cgroups in those hierarchies, which then stay attached to the host with
# no mount point; every runc shim's stats on the host fail from then on.
# Mount them the way systemd does on an ordinary host, before kind starts.
mount_v1_controllers() {
	[ -d /sys/fs/cgroup/memory ] || return 0 # cgroup v2 only: nothing to do
	local name hier
	while read -r name hier _ enabled; do
		case $name in '#'*) continue ;; esac
		[ "$enabled" = 1 ] || continue
		# A controller in no hierarchy yet (0) gets its own; one already
		# attached to a hierarchy with no mount point (what a kind node
		# leaves behind) must be mounted with every controller sharing it.
		local group=$name
		if [ "$hier" != 0 ]; then
			group=$(awk -v h="$hier" '$2 == h && $1 !~ /^#/ {print $1}' /proc/cgroups | paste -sd, -)
		fi
		if ! awk -v g="$group" '$3 == "cgroup" && $4 ~ "(^|,)" g "(,|$)"' /proc/mounts | grep -q .; then
			[ -d "/sys/fs/cgroup/$group" ] && mountpoint -q "/sys/fs/cgroup/$group" && continue
			mkdir -p "/sys/fs/cgroup/$group"
			mount -t cgroup -o "$group" cgroup "/sys/fs/cgroup/$group" && log "mounted cgroup v1 $group"
		fi
	done </proc/cgroups
}
run "mount the host's unmounted cgroup v1 controllers" mount_v1_controllers
run "install host dependencies" bash "$repo/hack/install-deps.sh"
run "containerd, runc, crictl" bash "$repo/hack/install-cri-tools.sh"
run "Kubernetes $KIND_K8S_VERSION, etcd, CoreDNS, kind (first run ~25 min)" bash "$here/build-k8s.sh"
run "control-plane images" bash "$here/control-plane-images.sh"
run "test images" bash "$here/test-images.sh"
run "node image $KIND_NODE_IMAGE" bash "$here/node-image.sh"
run "berth-cni image" bash "$repo/hack/cni-images.sh"
run "berth-csi and CSI sidecar images" bash "$repo/hack/csi-images.sh"
run "kind cluster $NAME" bash "$here/cluster.sh" create --recipe berth --name "$NAME"

# An existing cluster is kept (idempotence), so its nodes may run an older
# node image than the one just built. Say so rather than leave the user to
# wonder why a berth-cri change did not take.
stale_nodes() {
	local want node have
	want=$(docker image inspect -f '{{.Id}}' "$KIND_NODE_IMAGE")
	for node in $(kind get nodes --name "$NAME"); do
		have=$(docker inspect -f '{{.Image}}' "$node")
		[ "$have" = "$want" ] || echo "$node"
	done
}
if stale=$(stale_nodes) && [ -n "$stale" ]; then
	log "note: $(echo $stale | tr ' ' ',') run an older $KIND_NODE_IMAGE (berth-cri, kubelet config);"
	log "      'make down && make up' recreates the cluster from the new image"
fi

load() {
	for tar in "$repo"/_output/images/*.tar; do
		kind load image-archive "$tar" --name "$NAME" >/dev/null
	done
}
run "load berth images into the nodes" load
run "deploy berth-cni and berth-netd (cni/deploy)" k apply -k "$repo/cni/deploy"
run "wait for every node to be Ready" k wait --for=condition=Ready nodes --all --timeout=300s
deploy_csi() {
	k apply -k "$repo/csi/deploy/crds"
	k wait --for=condition=Established crd --all --timeout=120s
	k apply -k "$repo/csi/deploy"
	# berth's StorageClass is the default; kind's own hostPath class is not.
	k annotate storageclass standard storageclass.kubernetes.io/is-default-class=false --overwrite >/dev/null 2>&1 || true
	k -n berth-system rollout status daemonset/berth-csi-node --timeout=300s
}
run "deploy berth-csi (csi/deploy)" deploy_csi

# The images keep their tags (berth.dev/berth-cni:dev, ...) when they are
# rebuilt, so a kept cluster's pods would go on running the old code. Each
# workload in berth-system carries, as an annotation on the object (not on
# its pod template, which would roll it), the IDs of the images it runs; when
# they changed since the last `make up`, it is restarted. A workload met for
# the first time only gets the annotation: its pods just started from the
# images loaded above.
roll_changed() {
	local kind name strategy images ids have
	while read -r kind name strategy images; do
		ids=$(for i in $images; do docker image inspect -f '{{.Id}}' "$i" 2>/dev/null || echo "$i"; done | sort | sha256sum | cut -c1-16)
		have=$(k -n berth-system get "$kind" "$name" -o jsonpath='{.metadata.annotations.berth\.dev/image-ids}')
		[ "$have" = "$ids" ] && continue
		k -n berth-system annotate "$kind" "$name" --overwrite "berth.dev/image-ids=$ids" >/dev/null
		[ -n "$have" ] || continue
		if [ "$strategy" = OnDelete ]; then
			log "  $kind/$name has new images but updates OnDelete (it holds the volumes' FUSE connections): delete its pods to take them"
			continue
		fi
		log "  $kind/$name: images changed, restarting"
		k -n berth-system rollout restart "$kind" "$name" >/dev/null
		k -n berth-system rollout status "$kind" "$name" --timeout=300s >/dev/null
	done < <(k -n berth-system get daemonsets,deployments -o jsonpath='{range .items[*]}{.kind} {.metadata.name} {.spec.updateStrategy.type}{.spec.strategy.type} {.spec.template.spec.initContainers[*].image} {.spec.template.spec.containers[*].image}{"\n"}{end}')
}
run "restart berth workloads whose images changed" roll_changed
run "demo" bash "$here/demo.sh" "$CTX"
trap - ERR
cat >&2 <<EOF

berth is up in $((SECONDS - t0))s: cluster "$NAME", 3 nodes on berth-cri, pods wired by
berth-cni (VXLAN), volumes from berth-csi (default StorageClass "berth").

  kubectl --context $CTX get nodes -o wide
  kubectl --context $CTX get pods -A
  make e2e      # end-to-end suites against this cluster
  make down     # delete the cluster
EOF
