package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Address plan: everything lives in 198.18.0.0/15 (RFC 2544 benchmarking
// range), inside bperf- namespaces, so nothing here can route off the
// machine or collide with its own addresses.
const (
	underlayNet   = "198.18.0" // .1 = node 1, .2 = node 2 (vxlan cases)
	vethRawNet    = "198.18.1" // veth-raw
	mvBerthSubnet = "198.18.10.0/24"
	mvRefSubnet   = "198.18.11.0/24"
	brRefSubnet   = "198.18.12.0/24"
	latBerthSub   = "198.18.20.0/24"
	latRefSub     = "198.18.21.0/24"
	vxBerthCIDR1  = "198.18.64.0/24" // berth vxlan node 1 pod CIDR
	vxBerthCIDR2  = "198.18.65.0/24"
	vxFlanCIDRNet = "198.18.%d" // flannel-like: 66 = node 1, 67 = node 2
	refCNIVersion = "1.0.0"     // Debian's reference plugins speak <= 1.0.0
	berthVersion  = "1.1.0"
	underlayMTU   = 1500
	vxlanOverhead = 50
)

// endpoints is what a case setup hands the measurement loop.
type endpoints struct {
	ServerNS string `json:"serverNetns"`
	ClientNS string `json:"clientNetns"`
	ServerIP string `json:"serverIP"`
	ClientIP string `json:"clientIP"`
	PodMTU   int    `json:"podMTU"`
}

// tcase is one throughput configuration.
type tcase struct {
	Name  string
	Desc  string
	Kind  string // "baseline", "reference" or "berth"
	setup func(ctx context.Context, h *harness) (*endpoints, error)
}

func throughputCases() []tcase {
	return []tcase{
		{"veth-raw", "raw veth pair between two netns (ceiling)", "baseline", setupVethRaw},
		{"macvlan-ref", "reference macvlan (bridge mode) + host-local, 2 pods on one node", "reference", setupMacvlanRef},
		{"macvlan-berth", "berth-cni mode macvlan (bridge), 2 pods on one node", "berth", setupMacvlanBerth},
		{"bridge-ref", "reference bridge + host-local, 2 pods on one node", "reference", setupBridgeRef},
		{"vxlan-flannel-like", "hand-built flannel-style VXLAN (VNI 1, static FDB/neigh/routes) + reference bridge, pods on 2 nodes", "reference", setupVxlanFlannel},
		{"vxlan-berth", "berth-cni mode vxlan (berth.1), pods on 2 nodes over the same veth underlay", "berth", setupVxlanBerth},
	}
}

func setupVethRaw(ctx context.Context, h *harness) (*endpoints, error) {
	a, b := "bperf-raw-a", "bperf-raw-b"
	for _, ns := range []string{a, b} {
		if err := h.env.AddNetns(ctx, ns, false); err != nil {
			return nil, err
		}
	}
	if err := ipn(ctx, a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b); err != nil {
		return nil, err
	}
	for i, ns := range []string{a, b} {
		if err := ipn(ctx, ns, "addr", "add", fmt.Sprintf("%s.%d/24", vethRawNet, i+1), "dev", "eth0"); err != nil {
			return nil, err
		}
		if err := ipn(ctx, ns, "link", "set", "eth0", "up"); err != nil {
			return nil, err
		}
	}
	return &endpoints{ServerNS: a, ClientNS: b, ServerIP: vethRawNet + ".1", ClientIP: vethRawNet + ".2", PodMTU: linkMTU(ctx, a, "eth0")}, nil
}

// macvlanNode makes a node netns whose macvlan master is one end of a veth
// pair living entirely inside it (both ends up so the master has carrier).
func macvlanNode(ctx context.Context, h *harness, node string) error {
	if err := h.env.AddNetns(ctx, node, false); err != nil {
		return err
	}
	if err := ipn(ctx, node, "link", "add", "bpm0", "type", "veth", "peer", "name", "bpm0p"); err != nil {
		return err
	}
	for _, l := range []string{"bpm0", "bpm0p"} {
		if err := ipn(ctx, node, "link", "set", l, "up"); err != nil {
			return err
		}
	}
	return nil
}

// twoPods adds two pods to one node with the same plugin and conf.
func twoPods(ctx context.Context, h *harness, p plugin, node, prefix string, conf []byte) (*endpoints, error) {
	pods := []string{prefix + "-p1", prefix + "-p2"}
	var ips []string
	for _, pod := range pods {
		if err := h.env.AddNetns(ctx, pod, false); err != nil {
			return nil, err
		}
		a, err := h.env.CNIAdd(ctx, p, node, pod, "eth0", conf)
		if err != nil {
			return nil, err
		}
		ips = append(ips, a.IP)
	}
	return &endpoints{ServerNS: pods[0], ClientNS: pods[1], ServerIP: ips[0], ClientIP: ips[1], PodMTU: linkMTU(ctx, pods[0], "eth0")}, nil
}

func hostLocal(subnet, dataDir string) map[string]any {
	return map[string]any{"type": "host-local", "subnet": subnet, "dataDir": dataDir}
}

func setupMacvlanRef(ctx context.Context, h *harness) (*endpoints, error) {
	node := "bperf-mvr-node"
	if err := macvlanNode(ctx, h, node); err != nil {
		return nil, err
	}
	dir, err := h.env.TempDir("bperf-mvr-ipam-")
	if err != nil {
		return nil, err
	}
	conf := mustJSON(map[string]any{
		"cniVersion": refCNIVersion, "name": "bperf-mvref", "type": "macvlan",
		"master": "bpm0", "mode": "bridge", "ipam": hostLocal(mvRefSubnet, dir),
	})
	return twoPods(ctx, h, h.refPlugin("macvlan"), node, "bperf-mvr", conf)
}

func berthMacvlanConf(name, subnet, dataDir string) []byte {
	return mustJSON(map[string]any{
		"cniVersion": berthVersion, "name": name, "type": "berth", "mode": "macvlan",
		"master": "bpm0", "macvlanMode": "bridge",
		"ipam": map[string]any{"subnet": subnet, "dataDir": dataDir},
		// Pure networking, as the reference plugins do; the eBPF
		// dataplane's cost is measured by the dataplane suite.
		"tenancy": map[string]any{"enabled": false},
	})
}

func setupMacvlanBerth(ctx context.Context, h *harness) (*endpoints, error) {
	if err := h.berthAvailable(); err != nil {
		return nil, err
	}
	node := "bperf-mvb-node"
	if err := macvlanNode(ctx, h, node); err != nil {
		return nil, err
	}
	dir, err := h.env.TempDir("bperf-mvb-ipam-")
	if err != nil {
		return nil, err
	}
	return twoPods(ctx, h, h.berth, node, "bperf-mvb", berthMacvlanConf("bperf-mv", mvBerthSubnet, dir))
}

func setupBridgeRef(ctx context.Context, h *harness) (*endpoints, error) {
	node := "bperf-br-node"
	if err := h.env.AddNetns(ctx, node, false); err != nil {
		return nil, err
	}
	dir, err := h.env.TempDir("bperf-br-ipam-")
	if err != nil {
		return nil, err
	}
	conf := mustJSON(map[string]any{
		"cniVersion": refCNIVersion, "name": "bperf-br", "type": "bridge",
		"bridge": "bpbr0", "isGateway": true, "ipMasq": false,
		"ipam": hostLocal(brRefSubnet, dir),
	})
	return twoPods(ctx, h, h.refPlugin("bridge"), node, "bperf-br", conf)
}

// underlay makes two node namespaces joined by a veth pair "bpu0" with
// 198.18.0.1/24 and 198.18.0.2/24: the "physical" network of the vxlan
// cases.
func underlay(ctx context.Context, h *harness, n1, n2 string) error {
	for _, ns := range []string{n1, n2} {
		if err := h.env.AddNetns(ctx, ns, false); err != nil {
			return err
		}
		// A node forwards between its pods and the overlay.
		if _, err := nsExec(ctx, ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
	}
	if err := ipn(ctx, n1, "link", "add", "bpu0", "mtu", fmt.Sprint(underlayMTU), "type", "veth", "peer", "name", "bpu0", "netns", n2); err != nil {
		return err
	}
	for i, ns := range []string{n1, n2} {
		if err := ipn(ctx, ns, "addr", "add", fmt.Sprintf("%s.%d/24", underlayNet, i+1), "dev", "bpu0"); err != nil {
			return err
		}
		if err := ipn(ctx, ns, "link", "set", "bpu0", "up"); err != nil {
			return err
		}
	}
	return nil
}

// setupVxlanFlannel reproduces what flannel's vxlan backend programs on
// each node: a vxlan device flannel.1 (VNI 1, port 4789, nolearning, MTU =
// underlay - 50) holding the node's <podCIDR>.0/32, and for every other
// node a route <podCIDR> via <podCIDR>.0 onlink, a permanent neighbour for
// that .0 address with the peer VTEP's MAC, and an FDB entry sending that
// MAC to the peer's underlay IP. Pods hang off a cni0-like bridge made by
// the reference bridge plugin (flannel delegates to it the same way).
func setupVxlanFlannel(ctx context.Context, h *harness) (*endpoints, error) {
	nodes := []string{"bperf-vf-n1", "bperf-vf-n2"}
	if err := underlay(ctx, h, nodes[0], nodes[1]); err != nil {
		return nil, err
	}
	mac := func(i int) string { return fmt.Sprintf("02:62:70:00:00:%02x", i+1) }
	cidrNet := func(i int) string { return fmt.Sprintf(vxFlanCIDRNet, 66+i) }
	mtu := fmt.Sprint(underlayMTU - vxlanOverhead)
	for i, n := range nodes {
		j := 1 - i
		steps := [][]string{
			{"link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", fmt.Sprintf("%s.%d", underlayNet, i+1),
				"dev", "bpu0", "dstport", "4789", "nolearning"},
			{"link", "set", "flannel.1", "address", mac(i), "mtu", mtu},
			{"addr", "add", cidrNet(i) + ".0/32", "dev", "flannel.1"},
			{"link", "set", "flannel.1", "up"},
			{"neigh", "add", cidrNet(j) + ".0", "lladdr", mac(j), "dev", "flannel.1", "nud", "permanent"},
			{"route", "add", cidrNet(j) + ".0/24", "via", cidrNet(j) + ".0", "dev", "flannel.1", "onlink"},
		}
		for _, s := range steps {
			if err := ipn(ctx, n, s...); err != nil {
				return nil, err
			}
		}
		if _, err := nsExec(ctx, n, "bridge", "fdb", "append", mac(j), "dev", "flannel.1",
			"dst", fmt.Sprintf("%s.%d", underlayNet, j+1), "self", "permanent"); err != nil {
			return nil, err
		}
	}
	pods := []string{"bperf-vf-p1", "bperf-vf-p2"}
	var ips []string
	for i, pod := range pods {
		if err := h.env.AddNetns(ctx, pod, false); err != nil {
			return nil, err
		}
		dir, err := h.env.TempDir(fmt.Sprintf("bperf-vf-ipam%d-", i+1))
		if err != nil {
			return nil, err
		}
		conf := mustJSON(map[string]any{
			"cniVersion": refCNIVersion, "name": "bperf-vf", "type": "bridge",
			"bridge": "bpcni0", "isGateway": true, "isDefaultGateway": true,
			"ipMasq": false, "hairpinMode": true, "mtu": underlayMTU - vxlanOverhead,
			"ipam": hostLocal(cidrNet(i)+".0/24", dir),
		})
		a, err := h.env.CNIAdd(ctx, h.refPlugin("bridge"), nodes[i], pod, "eth0", conf)
		if err != nil {
			return nil, err
		}
		ips = append(ips, a.IP)
	}
	return &endpoints{ServerNS: pods[0], ClientNS: pods[1], ServerIP: ips[0], ClientIP: ips[1], PodMTU: linkMTU(ctx, pods[0], "eth0")}, nil
}

func setupVxlanBerth(ctx context.Context, h *harness) (*endpoints, error) {
	if err := h.berthAvailable(); err != nil {
		return nil, err
	}
	nodes := []string{"bperf-vb-n1", "bperf-vb-n2"}
	if err := underlay(ctx, h, nodes[0], nodes[1]); err != nil {
		return nil, err
	}
	dir, err := h.env.TempDir("bperf-vb-")
	if err != nil {
		return nil, err
	}
	cidrs := []string{vxBerthCIDR1, vxBerthCIDR2}
	peers := []map[string]string{
		{"nodeName": "n1", "underlayIP": underlayNet + ".1", "podCIDR": cidrs[0]},
		{"nodeName": "n2", "underlayIP": underlayNet + ".2", "podCIDR": cidrs[1]},
	}
	peersFile := filepath.Join(dir, "peers.json")
	if err := os.WriteFile(peersFile, mustJSON(peers), 0o644); err != nil {
		return nil, err
	}
	pods := []string{"bperf-vb-p1", "bperf-vb-p2"}
	var ips []string
	for i, pod := range pods {
		if err := h.env.AddNetns(ctx, pod, false); err != nil {
			return nil, err
		}
		dataDir := filepath.Join(dir, fmt.Sprintf("ipam-n%d", i+1))
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, err
		}
		conf := mustJSON(map[string]any{
			"cniVersion": berthVersion, "name": "bperf-vx", "type": "berth", "mode": "vxlan",
			"master": "bpu0", "vni": 1, "peersFile": peersFile,
			"ipam":    map[string]any{"subnet": cidrs[i], "dataDir": dataDir},
			"tenancy": map[string]any{"enabled": false},
		})
		a, err := h.env.CNIAdd(ctx, h.berth, nodes[i], pod, "eth0", conf)
		if err != nil {
			return nil, err
		}
		ips = append(ips, a.IP)
	}
	return &endpoints{ServerNS: pods[0], ClientNS: pods[1], ServerIP: ips[0], ClientIP: ips[1], PodMTU: linkMTU(ctx, pods[0], "eth0")}, nil
}
