#!/usr/bin/env bash
# demo.sh [CONTEXT]: a short tour of a berth cluster (make up runs it).
#   - two pods on different nodes, in two tenants, reach within a tenant and
#     not across (berth-cni tenant isolation over VXLAN);
#   - a pod with kubernetes.io/egress-bandwidth (berth's eBPF shaping);
#   - a PVC on berth-csi, with data written and read back.
# It leaves its namespaces (berth-demo-*) for kubectl to look at;
# `make down` removes everything.
set -euo pipefail
ctx=${1:-kind-berth}
k() { kubectl --context "$ctx" "$@"; }
say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
img=registry.k8s.io/e2e-test-images/busybox:1.29-2
mapfile -t nodes < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | grep -v control-plane)
[ ${#nodes[@]} -ge 2 ] || nodes+=("${nodes[0]}")

# Each namespace is created with its tenant label in one step: a namespace
# that exists unlabelled for a moment is in the default tenant for that
# moment, and a pod started then would stay there. berth-netd maps the
# namespace and gives the tenant a cluster-wide index; a pod that comes
# first fails its sandbox with "try again later" (CNI code 11) and kubelet
# retries it, so no wait is needed.
for t in blue green; do
	k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: berth-demo-$t, labels: {berth.dev/tenant: $t}}
EOF
done
pod() { # ns name node [annotations-json]
	k -n "$1" get pod "$2" >/dev/null 2>&1 && return
	k -n "$1" run "$2" --image=$img --restart=Never \
		--overrides="{\"metadata\":{\"annotations\":${4:-{\}}},\"spec\":{\"nodeName\":\"$3\",\"terminationGracePeriodSeconds\":1}}" \
		-- sh -c 'while true; do echo hello from $HOSTNAME | nc -l -p 8080; done' >/dev/null
}
pod berth-demo-blue server "${nodes[0]}"
pod berth-demo-blue client "${nodes[1]}"
pod berth-demo-green intruder "${nodes[1]}"
pod berth-demo-blue shaped "${nodes[1]}" '{"kubernetes.io/egress-bandwidth":"10M"}'
for p in blue/server blue/client green/intruder blue/shaped; do
	k -n "berth-demo-${p%/*}" wait --for=condition=Ready "pod/${p#*/}" --timeout=120s >/dev/null
done
ip=$(k -n berth-demo-blue get pod server -o jsonpath='{.status.podIP}')
say "blue/server runs on ${nodes[0]} at $ip"
say "blue/client (${nodes[1]}) → server: $(k -n berth-demo-blue exec client -- sh -c "nc -w 3 $ip 8080 </dev/null" 2>&1 || echo FAILED)"
if out=$(k -n berth-demo-green exec intruder -- sh -c "nc -w 3 $ip 8080 </dev/null" 2>&1) && [ -n "$out" ]; then
	say "green/intruder → blue/server: REACHED ($out) — isolation is not working"
else
	say "green/intruder (another tenant) → blue/server: blocked, as it should be"
fi
say "tenant indexes, the same on every node (ConfigMap berth-system/berth-tenants): $(k -n berth-system get configmap berth-tenants -o jsonpath='{.data}' 2>/dev/null || echo 'not there: berth-netd predates cluster-wide indexes')"
say "blue/shaped carries kubernetes.io/egress-bandwidth=10M; berth shapes it in eBPF"

k -n berth-demo-blue apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 64Mi}}}
EOF
k -n berth-demo-blue get pod writer >/dev/null 2>&1 || k -n berth-demo-blue apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: $img, command: ["sh", "-c", "date > /data/written-at; sleep 3600"], volumeMounts: [{name: d, mountPath: /data}]}
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
EOF
k -n berth-demo-blue wait --for=condition=Ready pod/writer --timeout=180s >/dev/null
say "PVC data: $(k -n berth-demo-blue get pvc data -o jsonpath='{.spec.volumeName} {.status.capacity.storage}') on berth-csi; read back: $(k -n berth-demo-blue exec writer -- cat /data/written-at)"
say "inside the pod: $(k -n berth-demo-blue exec writer -- df -h /data | tail -1)"
