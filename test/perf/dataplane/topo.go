package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/berthdev/berth/ebpf"
	"github.com/berthdev/berth/test/perf/perfnet"
)

// Address plan: everything lives in 198.19.0.0/16, the upper half of the
// RFC 2544 benchmarking range 198.18.0.0/15 (netperf uses only
// 198.18.0.0/16), inside bpdp- namespaces, so nothing here can route off
// the machine or collide with netperf or the machine's own addresses.
const (
	refCNIVersion   = "1.0.0" // Debian's reference plugins speak <= 1.0.0
	berthCNIVersion = "1.1.0"
	underlayMTU     = 1500
)

// subnets of each topology (one /24 each).
var subnet = map[string]string{
	caseRef:       "198.19.10.0/24",
	caseRefBig:    "198.19.11.0/24",
	caseBerthVe:   "198.19.12.0/24",
	caseBerthMv:   "198.19.13.0/24",
	"oh-on":       "198.19.20.0/24",
	"oh-off":      "198.19.21.0/24",
	"add-dp":      "198.19.30.0/24",
	"add-bw":      "198.19.31.0/24",
	"add-plain":   "198.19.32.0/24",
	"add-ref":     "198.19.33.0/24",
	"underlay-bv": "198.19.2.1/24", // bpu0 of berth-veth's node: the VTEP address
	"underlay-ad": "198.19.3.1/24", // bpu0 of the ADD-latency berth nodes
}

// shapeCase is one shaping setup: a node with a peer pod (unshaped) and
// one shaped pod per rate, each shaped at that rate in both directions.
type shapeCase struct {
	Name    string            `json:"name"`
	Kind    string            `json:"kind"` // "reference" or "berth"
	Desc    string            `json:"description"`
	Status  string            `json:"status"` // ok, failed, skipped
	Error   string            `json:"error,omitempty"`
	Node    string            `json:"nodeNetns"`
	Peer    *pod              `json:"peer,omitempty"`
	Shaped  map[string]*pod   `json:"shaped,omitempty"` // by rate label
	Burst   map[string]uint64 `json:"burstBits,omitempty"`
	PodMTU  int               `json:"podMTU"`
	Qdiscs  map[string]string `json:"qdiscs,omitempty"`  // tc configuration as installed, by rate label
	Streams []int             `json:"streams,omitempty"` // stream counts in the accuracy grid; empty = all
	net     *network
	bursts  func(rate uint64) uint64 // 0 = omit (plugin default)
	dumpTC  func(ctx context.Context, p *pod) string
}

// measures reports whether the accuracy grid runs this case at streams.
func (c *shapeCase) measures(streams int) bool {
	if len(c.Streams) == 0 {
		return true
	}
	for _, s := range c.Streams {
		if s == streams {
			return true
		}
	}
	return false
}

func (h *harness) stateDir(name string) (string, error) {
	d := filepath.Join(h.tmp, name)
	return d, os.MkdirAll(d, 0o755)
}

// addNode creates a node namespace with forwarding on.
func (h *harness) addNode(ctx context.Context, node string) error {
	if err := h.env.AddNetns(ctx, node, false); err != nil {
		return err
	}
	_, err := perfnet.NSExec(ctx, node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	return err
}

// nodeVeth adds a veth pair dev/dev+"p" inside node, both up, and gives
// dev addr (if any): a macvlan master or a VXLAN underlay that never
// leaves the node namespace.
func nodeVeth(ctx context.Context, node, dev, addr string) error {
	if err := perfnet.IPN(ctx, node, "link", "add", dev, "mtu", fmt.Sprint(underlayMTU), "type", "veth", "peer", "name", dev+"p"); err != nil {
		return err
	}
	if addr != "" {
		if err := perfnet.IPN(ctx, node, "addr", "add", addr, "dev", dev); err != nil {
			return err
		}
	}
	for _, l := range []string{dev, dev + "p"} {
		if err := perfnet.IPN(ctx, node, "link", "set", l, "up"); err != nil {
			return err
		}
	}
	return nil
}

// refConflist is the reference chain a runtime would load: ptp with
// host-local, then the bandwidth plugin taking the capability.
func (h *harness) refConflist(name, subnet, dataDir string) []byte {
	return perfnet.MustJSON(map[string]any{
		"cniVersion": refCNIVersion, "name": name,
		"plugins": []any{
			map[string]any{"type": "ptp", "ipMasq": false, "mtu": underlayMTU,
				"ipam": map[string]any{"type": "host-local", "subnet": subnet, "dataDir": dataDir}},
			map[string]any{"type": "bandwidth", "capabilities": map[string]any{"bandwidth": true}},
		},
	})
}

// berthPlugin is a berth plugin entry with the run's private state:
// bpffs directory, tenant registry, locks and IPAM data.
func (h *harness) berthPlugin(mode, subnet, dataDir string, tenancy bool) map[string]any {
	p := map[string]any{
		"type": "berth", "mode": mode,
		"ipam":         map[string]any{"subnet": subnet, "dataDir": dataDir},
		"bpfPinDir":    h.pinDir,
		"lockDir":      filepath.Join(h.tmp, "lock"),
		"capabilities": map[string]any{"bandwidth": true},
	}
	t := map[string]any{"registry": filepath.Join(h.tmp, "tenants.json")}
	if !tenancy {
		t["enabled"] = false
	}
	p["tenancy"] = t
	switch mode {
	case "macvlan":
		p["master"], p["macvlanMode"] = "bpm0", "bridge"
	case "vxlan":
		p["master"], p["vni"] = "bpu0", 1
	}
	return p
}

func berthConflist(name string, plugin map[string]any) []byte {
	return perfnet.MustJSON(map[string]any{"cniVersion": berthCNIVersion, "name": name, "plugins": []any{plugin}})
}

// berthNode makes a berth node: macvlan master bpm0, or VXLAN underlay
// bpu0 with an address (vxlan mode: routed veth pods).
func (h *harness) berthNode(ctx context.Context, node, mode, underlay string) error {
	if err := h.addNode(ctx, node); err != nil {
		return err
	}
	if mode == "macvlan" {
		return nodeVeth(ctx, node, "bpm0", "")
	}
	return nodeVeth(ctx, node, "bpu0", underlay)
}

func (h *harness) berthNetwork(node, name string, plugin map[string]any) (*network, error) {
	cache, err := h.stateDir("cache-" + name)
	if err != nil {
		return nil, err
	}
	return newNetwork(h.env, "berth", node, []string{h.berth.CNIPath}, cache, berthConflist(name, plugin))
}

func (h *harness) refNetwork(node, name, subnet string) (*network, error) {
	data, err := h.stateDir("ipam-" + name)
	if err != nil {
		return nil, err
	}
	cache, err := h.stateDir("cache-" + name)
	if err != nil {
		return nil, err
	}
	return newNetwork(h.env, "ref", node, []string{h.opts.refDir}, cache, h.refConflist(name, subnet, data))
}

// burstFor is the reference plugin's burst in the fair case: exactly the
// burst berth uses when none is given, so both shapers get the same
// token bucket depth and differ only in how they queue.
func burstFor(rate uint64) uint64 { return ebpf.DefaultBurst(rate) }

// shapeCases lists the shaping setups in report order.
func (h *harness) shapeCases() []*shapeCase {
	big := h.opts.bigBurstBits
	return []*shapeCase{
		{Name: caseRef, Kind: "reference",
			Desc:   "reference ptp + host-local + bandwidth 1.1.1 (TBF on the host veth, ifb for egress), burst = berth's default burst for the rate",
			bursts: burstFor},
		{Name: caseRefBig, Kind: "reference",
			Desc:    fmt.Sprintf("same chain, burst = %d bits (%s, what containerd passes for a pod with bandwidth annotations)", big, humanBits(big)),
			bursts:  func(uint64) uint64 { return big },
			Streams: h.opts.bigStreams},
		{Name: caseBerthVe, Kind: "berth",
			Desc:   "berth-cni vxlan mode (routed veth pods), tenancy on, bandwidth capability without burst (berth's default)",
			bursts: func(uint64) uint64 { return 0 }},
		{Name: caseBerthMv, Kind: "berth",
			Desc:   "berth-cni macvlan mode (bridge), tenancy on, bandwidth capability without burst (berth's default)",
			bursts: func(uint64) uint64 { return 0 }},
	}
}

// setupShaping builds every selected shaping case and starts its iperf3
// servers: one in the peer and one in every shaped pod (the client always
// runs in the receiving pod with -R, so the sender is always a server).
func (h *harness) setupShaping(ctx context.Context, rep *dpReport) []*shapeCase {
	var active []*shapeCase
	for _, c := range h.shapeCases() {
		if !h.opts.cases[c.Name] {
			continue
		}
		rep.Cases = append(rep.Cases, c)
		if ctx.Err() != nil {
			c.Status, c.Error = "failed", "interrupted"
			continue
		}
		if c.Kind == "berth" && h.berthErr != nil {
			c.Status, c.Error = "skipped", h.berthErr.Error()
			continue
		}
		h.logf("setup %s", c.Name)
		if err := h.setupCase(ctx, c); err != nil {
			c.Status, c.Error = "failed", err.Error()
			h.logf("  %s failed: %v", c.Name, err)
			continue
		}
		c.Status = "ok"
		active = append(active, c)
	}
	return active
}

func (h *harness) setupCase(ctx context.Context, c *shapeCase) error {
	tag := map[string]string{caseRef: "rf", caseRefBig: "rb", caseBerthVe: "bv", caseBerthMv: "bm"}[c.Name]
	c.Node = nsPrefix + tag + "-node"
	var err error
	switch c.Kind {
	case "reference":
		if err = h.addNode(ctx, c.Node); err != nil {
			return err
		}
		c.net, err = h.refNetwork(c.Node, nsPrefix+tag, subnet[c.Name])
		c.dumpTC = func(ctx context.Context, p *pod) string { return tcDumpHostVeth(ctx, c.Node, p.HostIf) }
	default:
		mode := "vxlan"
		if c.Name == caseBerthMv {
			mode = "macvlan"
		}
		if err = h.berthNode(ctx, c.Node, mode, subnet["underlay-bv"]); err != nil {
			return err
		}
		dataDir, derr := h.stateDir("ipam-" + tag)
		if derr != nil {
			return derr
		}
		c.net, err = h.berthNetwork(c.Node, nsPrefix+tag, h.berthPlugin(mode, subnet[c.Name], dataDir, true))
		c.dumpTC = func(ctx context.Context, p *pod) string { return tcDump(ctx, p.NS) }
	}
	if err != nil {
		return err
	}
	c.Shaped = map[string]*pod{}
	c.Burst = map[string]uint64{}
	c.Qdiscs = map[string]string{}
	peerNS := nsPrefix + tag + "-peer"
	if err := h.env.AddNetns(ctx, peerNS, false); err != nil {
		return err
	}
	if c.Peer, _, err = c.net.add(ctx, peerNS, nil); err != nil {
		return err
	}
	c.PodMTU = perfnet.LinkMTU(ctx, peerNS, "eth0")
	for _, r := range h.opts.rates {
		ns := fmt.Sprintf("%s%s-%s", nsPrefix, tag, strings.ToLower(mbit(r)))
		if err := h.env.AddNetns(ctx, ns, false); err != nil {
			return err
		}
		burst := c.bursts(r)
		bw := &bandwidth{IngressRate: r, EgressRate: r, IngressBurst: burst, EgressBurst: burst}
		p, _, err := c.net.add(ctx, ns, bw)
		if err != nil {
			return fmt.Errorf("shaped pod at %s: %w", mbit(r), err)
		}
		c.Shaped[mbit(r)] = p
		c.Burst[mbit(r)] = burst
		c.Qdiscs[mbit(r)] = c.dumpTC(ctx, p)
	}
	for _, ns := range append([]string{peerNS}, h.shapedNS(c)...) {
		if _, err := h.env.StartIperfServer(ctx, h.opts.iperf3, ns, h.opts.basePort, h.logDir); err != nil {
			return err
		}
	}
	// Warm-up: prove every path works in both directions (ARP, routes,
	// the dataplane's maps) before anything is measured; not recorded.
	for _, r := range h.opts.rates {
		p := c.Shaped[mbit(r)]
		for _, dir := range directions {
			snd, rcv := endpointsFor(c, p, dir)
			if _, err := udpProbe(ctx, snd.NS, rcv.NS, rcv.IP, h.opts.basePort+1, 3, 10*time.Millisecond, time.Second); err != nil {
				return fmt.Errorf("warm-up %s %s: %w", mbit(r), dir, err)
			}
		}
	}
	return nil
}

func (h *harness) shapedNS(c *shapeCase) []string {
	var out []string
	for _, r := range h.opts.rates {
		if p := c.Shaped[mbit(r)]; p != nil {
			out = append(out, p.NS)
		}
	}
	return out
}

// endpointsFor returns sender and receiver of a shaped direction: egress
// is traffic the shaped pod sends, ingress traffic it receives.
func endpointsFor(c *shapeCase, shaped *pod, dir string) (sender, receiver *pod) {
	if dir == "egress" {
		return shaped, c.Peer
	}
	return c.Peer, shaped
}

// tcDump records the queueing configuration of a namespace as installed
// (qdiscs and classes of every link), for the report.
func tcDump(ctx context.Context, ns string) string {
	var b strings.Builder
	out, err := perfnet.Run(ctx, "tc", "-n", ns, "qdisc", "show")
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "qdisc noqueue") {
			continue
		}
		b.WriteString(l + "\n")
	}
	links, _ := perfnet.Run(ctx, "ip", "-n", ns, "-o", "link", "show")
	for _, l := range strings.Split(links, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		dev := strings.TrimSuffix(f[1], ":")
		dev, _, _ = strings.Cut(dev, "@")
		if cl, err := perfnet.Run(ctx, "tc", "-n", ns, "class", "show", "dev", dev); err == nil && cl != "" {
			b.WriteString(cl + "\n")
		}
	}
	return strings.TrimSpace(b.String())
}

// tcDumpHostVeth records what the reference bandwidth plugin installed for
// one pod: the TBF on its host veth (ingress shaping) and, through the
// mirred redirect on that veth's ingress, the ifb carrying the egress TBF.
func tcDumpHostVeth(ctx context.Context, node, hostIf string) string {
	if hostIf == "" {
		return "host veth unknown (not in the ADD result)"
	}
	var b strings.Builder
	q, err := perfnet.Run(ctx, "tc", "-n", node, "qdisc", "show", "dev", hostIf)
	if err != nil {
		return err.Error()
	}
	b.WriteString(q + "\n")
	f, _ := perfnet.Run(ctx, "tc", "-n", node, "filter", "show", "dev", hostIf, "ingress")
	if m := mirredRE.FindStringSubmatch(f); m != nil {
		if q, err := perfnet.Run(ctx, "tc", "-n", node, "qdisc", "show", "dev", m[1]); err == nil {
			b.WriteString(q + "\n")
		}
	}
	return strings.TrimSpace(b.String())
}

var mirredRE = regexp.MustCompile(`to device (\S+)\)`)

func humanBits(bits uint64) string {
	bytes := float64(bits) / 8
	switch {
	case bytes >= 1<<20:
		return fmt.Sprintf("%.0f MiB", bytes/(1<<20))
	case bytes >= 1<<10:
		return fmt.Sprintf("%.0f KiB", bytes/(1<<10))
	}
	return fmt.Sprintf("%.0f B", bytes)
}
