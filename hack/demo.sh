#!/usr/bin/env bash
# demo.sh up|down — a standalone two-node berth demo in network namespaces.
#
# Until the kind cluster exists this is what `make up` shows: two "nodes"
# (network namespaces joined by a veth underlay, 198.18.0.1 and 198.18.0.2),
# pods attached by the real berth CNI binary exactly as a runtime calls it,
# berth-netd reconciling the VXLAN peers file on each node, and pings
# within and across nodes. Everything is named berth-demo-* and `make down`
# removes it. Nothing touches the machine's own interfaces.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
cd "$REPO_ROOT"

OUT=$REPO_ROOT/_output/demo
BIN=$REPO_ROOT/_output/bin
NODES=(berth-demo-n1 berth-demo-n2)
PODS=(berth-demo-p1 berth-demo-p2 berth-demo-p3 berth-demo-m1 berth-demo-m2 berth-demo-m3)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'make up: FAILED at step "%s"\n' "$1" >&2; exit 1; }

down() {
	for f in "$OUT"/netd-*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		# Only stop the agent we started: check it is still berth-netd.
		if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q berth-netd; then
			kill "$pid" 2>/dev/null || true
		fi
		rm -f "$f"
	done
	for ns in "${PODS[@]}" "${NODES[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$OUT" /sys/fs/bpf/berth-demo
}

# cni NODE COMMAND CONTAINERID NETNS CONF [CNI_ARGS]: run the plugin as a
# runtime does.
cni() {
	CNI_COMMAND=$2 CNI_CONTAINERID=$3 CNI_NETNS=/run/netns/$4 CNI_IFNAME=eth0 CNI_ARGS=${6:-} \
		CNI_PATH=$BIN nsenter --net=/run/netns/"$1" -- "$BIN/berth" <"$5"
}

conf() { # name mode master subnet node extra-json
	cat <<JSON
{"cniVersion":"1.1.0","name":"$1","type":"berth","mode":"$2","master":"$3",
 "nodeName":"$5","peersFile":"$OUT/peers.json","lockDir":"$OUT/lock-$5",
 "bpfPinDir":"/sys/fs/bpf/berth-demo","tenancy":{"registry":"$OUT/tenants.json"},
 "ipam":{"subnet":"$4","dataDir":"$OUT/ipam-$5"}$6}
JSON
}

pod_ip() { jq -r '.ips[0].address' | cut -d/ -f1; }

up() {
	[ "$(id -u)" -eq 0 ] || { echo "make up needs root (network namespaces)" >&2; exit 1; }
	say "installing dependencies"; bash "$here/install-deps.sh" || fail "install dependencies"
	say "building berth"; make --no-print-directory build >/dev/null || fail "build"
	down
	mkdir -p "$OUT"

	say "two nodes joined by a veth underlay"
	for ns in "${NODES[@]}" "${PODS[@]}"; do ip netns add "$ns" && ip -n "$ns" link set lo up; done
	ip -n berth-demo-n1 link add und0 type veth peer name und0 netns berth-demo-n2 || fail "underlay"
	ip -n berth-demo-n1 addr add 198.18.0.1/24 dev und0
	ip -n berth-demo-n2 addr add 198.18.0.2/24 dev und0
	ip -n berth-demo-n1 link set und0 up
	ip -n berth-demo-n2 link set und0 up
	# A macvlan parent that lives inside node 1 (never a real NIC).
	ip -n berth-demo-n1 link add mvparent type veth peer name mvpeer
	ip -n berth-demo-n1 link set mvparent up
	ip -n berth-demo-n1 link set mvpeer up

	cat >"$OUT/peers.json" <<JSON
[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
 {"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"}]
JSON
	conf demo-vxlan vxlan und0 198.18.64.0/24 n1 "" >"$OUT/n1-vxlan.json"
	conf demo-vxlan vxlan und0 198.18.65.0/24 n2 "" >"$OUT/n2-vxlan.json"
	conf demo-macvlan macvlan mvparent 198.18.10.0/24 n1 ',"macvlanMode":"bridge"' >"$OUT/n1-macvlan.json"

	say "berth-netd (standalone mode) on each node, watching the peers file"
	for n in 1 2; do
		nsenter --net=/run/netns/berth-demo-n$n -- "$BIN/berth-netd" --peers-file "$OUT/peers.json" \
			--node-name n$n --underlay-ip 198.18.0.$n --lock-dir "$OUT/lock-n$n" --metrics-address "" \
			--bpf-pin-dir /sys/fs/bpf/berth-demo --tenant-registry "$OUT/tenants.json" \
			>"$OUT/netd-n$n.log" 2>&1 &
		echo $! >"$OUT/netd-n$n.pid"
	done

	say "CNI ADD: vxlan pods p1, p2 on node 1 and p3 on node 2; macvlan pods m1, m2 on node 1"
	p1=$(cni berth-demo-n1 ADD demo-p1 berth-demo-p1 "$OUT/n1-vxlan.json" | pod_ip) || fail "ADD p1"
	p2=$(cni berth-demo-n1 ADD demo-p2 berth-demo-p2 "$OUT/n1-vxlan.json" | pod_ip) || fail "ADD p2"
	p3=$(cni berth-demo-n2 ADD demo-p3 berth-demo-p3 "$OUT/n2-vxlan.json" | pod_ip) || fail "ADD p3"
	m1=$(cni berth-demo-n1 ADD demo-m1 berth-demo-m1 "$OUT/n1-macvlan.json" | pod_ip) || fail "ADD m1"
	m2=$(cni berth-demo-n1 ADD demo-m2 berth-demo-m2 "$OUT/n1-macvlan.json" | pod_ip) || fail "ADD m2"
	m3=$(cni berth-demo-n1 ADD demo-m3 berth-demo-m3 "$OUT/n1-macvlan.json" "K8S_POD_NAMESPACE=team-b" | pod_ip) || fail "ADD m3"
	printf '  p1 %s (node 1, vxlan)\n  p2 %s (node 1, vxlan)\n  p3 %s (node 2, vxlan)\n  m1 %s (node 1, macvlan)\n  m2 %s (node 1, macvlan)\n  m3 %s (node 1, macvlan, tenant team-b)\n' \
		"$p1" "$p2" "$p3" "$m1" "$m2" "$m3"

	say "pings"
	ping_from() { # ns addr label
		if nsenter --net=/run/netns/"$1" -- ping -c 2 -i 0.2 -W 2 "$2" >/dev/null; then
			printf '  %-34s ok\n' "$3"
		else
			printf '  %-34s FAILED\n' "$3"; return 1
		fi
	}
	ping_from berth-demo-p1 "$p2" "p1 -> p2 (same node)" || fail "ping same node"
	ping_from berth-demo-p1 "$p3" "p1 -> p3 (across nodes, VXLAN)" || fail "ping across nodes"
	ping_from berth-demo-p3 "$p2" "p3 -> p2 (across nodes, VXLAN)" || fail "ping across nodes"
	ping_from berth-demo-m1 "$m2" "m1 -> m2 (macvlan bridge)" || fail "ping macvlan"
	if nsenter --net=/run/netns/berth-demo-m1 -- ping -c 2 -i 0.2 -W 1 "$m3" >/dev/null 2>&1; then
		printf '  %-34s REACHED (isolation broken)\n' "m1 -> m3 (other tenant)"; fail "tenant isolation"
	else
		printf '  %-34s blocked, as it should be\n' "m1 -> m3 (other tenant)"
	fi

	say "node 1's overlay state"
	ip -n berth-demo-n1 -d link show berth.1 | sed -n '1,3p' | sed 's/^/  /'
	ip -n berth-demo-n1 route show dev berth.1 | sed 's/^/  route: /'
	bridge -n berth-demo-n1 fdb show dev berth.1 | grep dst | sed 's/^/  fdb:   /'
	ip -n berth-demo-n1 neigh show dev berth.1 | sed 's/^/  neigh: /'

	cat <<TXT

The demo is up. Try:
  sudo nsenter --net=/run/netns/berth-demo-p1 ping $p3
  sudo ip -n berth-demo-n1 route
  cat $OUT/netd-n1.log
Add a node to $OUT/peers.json and watch berth-netd program it.
Remove everything with: make down
TXT
}

case "${1:-}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
