package integration

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bebpf "github.com/berthdev/berth/ebpf"
)

// tenantPod is a pod added with an explicit tenant through CNI_ARGS, as
// berth-cri passes the berth.dev/tenant label.
func (n node) addTenant(t *testing.T, conf []byte, tenant string) pod {
	t.Helper()
	p := pod{ns: newNS(t, "t"), node: n.netNS, id: "ctr-" + randHex(8), ifName: "eth0"}
	p.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + tenant + ";K8S_POD_NAME=" + p.id
	out, err := n.invoke(cniCall{Command: "ADD", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Args: p.args, Conf: conf})
	if err != nil {
		t.Fatalf("ADD tenant %s: %v", tenant, err)
	}
	p.raw = out
	p.result = parseResult(t, out)
	return p
}

// services starts a TCP and a UDP responder in the pod (socat), stopped at
// cleanup.
func (p pod) services(t *testing.T) {
	t.Helper()
	for _, args := range [][]string{
		{"TCP-LISTEN:7000,reuseaddr,fork", "SYSTEM:echo pong"},
		{"UDP-RECVFROM:7001,fork", "SYSTEM:echo pong"},
	} {
		cmd := p.ns.exec("socat", args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	time.Sleep(200 * time.Millisecond)
}

// reach tries proto ("icmp", "tcp", "udp") from p to q.
func (p pod) reach(q pod, proto string) bool {
	switch proto {
	case "icmp":
		return p.ns.exec("ping", "-c", "1", "-W", "1", q.ip()).Run() == nil
	case "tcp":
		out, _ := p.ns.exec("socat", "-T1", "-", "TCP:"+q.ip()+":7000,connect-timeout=1").Output()
		return strings.Contains(string(out), "pong")
	case "udp":
		c := p.ns.exec("socat", "-T1", "-", "UDP:"+q.ip()+":7001")
		c.Stdin = strings.NewReader("ping\n")
		out, _ := c.Output()
		return strings.Contains(string(out), "pong")
	}
	return false
}

func pinDirOf(t *testing.T, conf []byte) string {
	t.Helper()
	var c struct {
		BPFPinDir string `json:"bpfPinDir"`
	}
	mustUnmarshal(t, conf, &c)
	return c.BPFPinDir
}

// TestTenantIsolationMatrix: two tenants x two pods, on one node (macvlan)
// and across nodes (vxlan, each tenant on its own VNI); every pair over
// ICMP, TCP and UDP. Same tenant: all pass. Different tenants: none.
func TestTenantIsolationMatrix(t *testing.T) {
	requireRoot(t)
	type setup struct {
		name string
		make func(t *testing.T) (pods map[string]pod, conf []byte)
	}
	setups := []setup{
		{"macvlan-same-node", func(t *testing.T) (map[string]pod, []byte) {
			n := newMacvlanNode(t)
			conf := netConf(t, "1.1.0", "bti-ten", "macvlan", n.Uplink, "198.18.50.0/24", nil)
			return map[string]pod{
				"a1": n.addTenant(t, conf, "team-a"), "a2": n.addTenant(t, conf, "team-a"),
				"b1": n.addTenant(t, conf, "team-b"), "b2": n.addTenant(t, conf, "team-b"),
			}, conf
		}},
		{"macvlan-cross-node", func(t *testing.T) (map[string]pod, []byte) {
			a, b := newMacvlanPair(t)
			ca := netConf(t, "1.1.0", "bti-ten", "macvlan", a.Uplink, "198.18.55.0/24", nil)
			// One L2 segment, so one subnet; node b allocates from the
			// upper half. Both nodes share this host's bpffs and registry,
			// as berth-netd shares remote endpoints in a cluster.
			cb := setJSON(t, ca, "ipam", map[string]any{"subnet": "198.18.55.0/24", "rangeStart": "198.18.55.128", "dataDir": t.TempDir()})
			return map[string]pod{
				"a1": a.addTenant(t, ca, "team-a"), "a2": b.addTenant(t, cb, "team-a"),
				"b1": a.addTenant(t, ca, "team-b"), "b2": b.addTenant(t, cb, "team-b"),
			}, ca
		}},
		{"vxlan-same-node", func(t *testing.T) (map[string]pod, []byte) {
			a, b := newVXLANPair(t)
			ca, _ := vxlanConfs(t, a, b, "1.1.0")
			return map[string]pod{
				"a1": a.addTenant(t, ca, "team-a"), "a2": a.addTenant(t, ca, "team-a"),
				"b1": a.addTenant(t, ca, "team-b"), "b2": a.addTenant(t, ca, "team-b"),
			}, ca
		}},
		{"vxlan-cross-node", func(t *testing.T) (map[string]pod, []byte) {
			a, b := newVXLANPair(t)
			ca, cb := vxlanConfs(t, a, b, "1.1.0")
			// Both "nodes" share this host's bpffs and registry, as the
			// nodes of a cluster share berth-netd's view.
			cb = setJSON(t, cb, "bpfPinDir", pinDirOf(t, ca))
			cb = setJSON(t, cb, "tenancy", jsonField(t, ca, "tenancy"))
			return map[string]pod{
				"a1": a.addTenant(t, ca, "team-a"), "a2": b.addTenant(t, cb, "team-a"),
				"b1": a.addTenant(t, ca, "team-b"), "b2": b.addTenant(t, cb, "team-b"),
			}, ca
		}},
	}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			pods, conf := s.make(t)
			for _, p := range pods {
				p.services(t)
			}
			// Every probe that must fail waits out its timeout, so the 36
			// probes run concurrently.
			names := []string{"a1", "a2", "b1", "b2"}
			var wg sync.WaitGroup
			for _, from := range names {
				for _, to := range names {
					if from == to {
						continue
					}
					for _, proto := range []string{"icmp", "tcp", "udp"} {
						wg.Add(1)
						go func(from, to, proto string) {
							defer wg.Done()
							want := from[0] == to[0]
							got := pods[from].reach(pods[to], proto)
							// UDP is lossy and socat's forking responder can
							// miss a datagram under concurrent probes: an
							// expected success may take a retry; an expected
							// failure gets no second chance to leak.
							for i := 0; want && !got && i < 3; i++ {
								got = pods[from].reach(pods[to], proto)
							}
							if got != want {
								t.Errorf("%s -> %s over %s: reached=%v, want %v", from, to, proto, got, want)
							}
						}(from, to, proto)
					}
				}
			}
			wg.Wait()
			maps, err := bebpf.OpenMaps(pinDirOf(t, conf))
			if err != nil {
				t.Fatal(err)
			}
			defer maps.Close()
			drops, err := maps.DropCounts()
			if err != nil {
				t.Fatal(err)
			}
			var cross uint64
			for k, v := range drops {
				if k.Reason == bebpf.DropTenant || k.Reason == bebpf.DropVNI {
					cross += v
				}
			}
			if cross == 0 {
				t.Errorf("no cross-tenant drops counted: %v", drops)
			}
			if s.name == "vxlan-cross-node" {
				checkTenantVNIs(t, pods)
			}
			// CHECK (with the pods' CNI_ARGS) verifies endpoints, programs and,
			// in vxlan mode, the tenant routing rule; a1 and b1 share conf's node.
			nd := node{netNS: pods["a1"].node}
			for _, name := range []string{"a1", "b1"} {
				if err := nd.check(t, conf, pods[name]); err != nil {
					t.Errorf("CHECK %s: %v", name, err)
				}
			}
			if s.name == "vxlan-cross-node" {
				run(t, "ip", "-n", nd.Name, "rule", "del", "from", pods["b1"].ip(), "priority", "1000")
				if err := nd.check(t, conf, pods["b1"]); err == nil {
					t.Error("CHECK passed with b1's tenant routing rule removed")
				}
			}
		})
	}
}

// TestTenantAllowList: an allow-listed service of another tenant is
// reachable on its port only, replies included.
func TestTenantAllowList(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	// The DNS-like service pod gets the first address of the range.
	conf := netConf(t, "1.1.0", "bti-allow", "macvlan", n.Uplink, "198.18.51.0/24", map[string]any{
		"tenancy": map[string]any{"allow": []map[string]any{
			{"cidr": "198.18.51.2/32", "ports": []map[string]any{{"protocol": "tcp", "port": 7000}}},
		}},
	})
	conf = setJSON(t, conf, "tenancy", mergeMap(t, jsonField(t, conf, "tenancy"), map[string]any{
		"registry": filepath.Join(t.TempDir(), "tenants.json"),
	}))
	svc := n.addTenant(t, conf, "kube-system")
	if svc.ip() != "198.18.51.2" {
		t.Fatalf("service pod got %s, the test expects 198.18.51.2", svc.ip())
	}
	client := n.addTenant(t, conf, "team-a")
	svc.services(t)
	client.services(t)
	if !client.reach(svc, "tcp") {
		t.Error("allow-listed tcp/7000 unreachable from another tenant")
	}
	if client.reach(svc, "udp") {
		t.Error("udp/7001 of the service reachable although only tcp/7000 is allowed")
	}
	if client.reach(svc, "icmp") {
		t.Error("icmp to the service reachable although only tcp/7000 is allowed")
	}
	if svc.reach(client, "tcp") {
		t.Error("the allow-listed pod reached back into another tenant")
	}
}

// TestTenantARPSpoof: a pod may not claim another pod's address in ARP.
func TestTenantARPSpoof(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	conf := netConf(t, "1.1.0", "bti-arp", "macvlan", n.Uplink, "198.18.52.0/24", nil)
	victim, peer := n.addTenant(t, conf, "team-a"), n.addTenant(t, conf, "team-a")
	attacker := n.addTenant(t, conf, "team-b")
	// Learn the real entry first.
	if !peer.reach(victim, "icmp") {
		t.Fatal("same-tenant ping failed")
	}
	// The attacker announces the victim's address as its own.
	out, err := attacker.ns.exec("python3", "-c", garpScript, "eth0", victim.ip()).CombinedOutput()
	if err != nil {
		t.Fatalf("sending the spoofed ARP: %v %s", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	neigh := peer.ns.ip(t, "neigh", "show", victim.ip())
	attackerMAC := attacker.result.Interfaces[0].Mac
	if strings.Contains(neigh, attackerMAC) {
		t.Errorf("peer's ARP cache was poisoned: %s", neigh)
	}
	if !peer.reach(victim, "icmp") {
		t.Error("victim unreachable after the spoof attempt")
	}
	maps, err := bebpf.OpenMaps(pinDirOf(t, conf))
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	drops, _ := maps.DropCounts()
	var spoof uint64
	for k, v := range drops {
		if k.Reason == bebpf.DropSpoof {
			spoof += v
		}
	}
	if spoof == 0 {
		t.Errorf("no spoofed-source drops counted: %v", drops)
	}
}

// garpScript sends one gratuitous ARP reply claiming argv[2] for this
// interface's MAC (python3 is on every Debian test host).
const garpScript = `
import socket, sys, struct
ifname, ip = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((ifname, 0))
mac = s.getsockname()[4]
ipb = socket.inet_aton(ip)
frame = b'\xff'*6 + mac + struct.pack('!H', 0x0806) + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2) + mac + ipb + b'\xff'*6 + ipb
for _ in range(3):
    try:
        s.send(frame)
    except OSError:
        pass  # ENOBUFS: the egress program dropped it, as it should
`

// TestTenantCleanup: DEL and GC remove the pods' endpoint entries.
func TestTenantCleanup(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	// TCX here; every other test uses the default cls_bpf attachment.
	conf := netConf(t, "1.1.0", "bti-tcl", "macvlan", n.Uplink, "198.18.53.0/24", map[string]any{"attachMode": "tcx"})
	p1, p2, p3 := n.addTenant(t, conf, "team-a"), n.addTenant(t, conf, "team-a"), n.addTenant(t, conf, "team-b")
	maps, err := bebpf.OpenMaps(pinDirOf(t, conf))
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	has := func(p pod) bool {
		_, ok, err := maps.LookupEndpoint(netip.MustParseAddr(p.ip()))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, p := range []pod{p1, p2, p3} {
		if !has(p) {
			t.Fatalf("endpoint %s not registered after ADD", p.ip())
		}
	}
	n.del(t, conf, p1)
	if has(p1) {
		t.Error("DEL left the endpoint entry")
	}
	gc := setJSON(t, conf, "cni.dev/valid-attachments", []map[string]string{{"containerID": p2.id, "ifname": "eth0"}})
	if _, err := n.invoke(cniCall{Command: "GC", Conf: gc}); err != nil {
		t.Fatal(err)
	}
	if !has(p2) || has(p3) {
		t.Errorf("after GC: p2 registered=%v (want true), p3 registered=%v (want false)", has(p2), has(p3))
	}
	if err := n.check(t, conf, p2); err != nil {
		t.Errorf("CHECK of the kept pod: %v", err)
	}
}

// TestTenantEnforcementSurvivesAgentRestart: the programs and pinned maps
// live in the kernel, so killing and restarting berth-netd while traffic
// flows neither opens cross-tenant traffic nor breaks same-tenant traffic.
func TestTenantEnforcementSurvivesAgentRestart(t *testing.T) {
	requireRoot(t)
	netd := buildNetd(t)
	a, b := newVXLANPair(t)
	ca, _ := vxlanConfs(t, a, b, "1.1.0")
	a1, a2, b1 := a.addTenant(t, ca, "team-a"), a.addTenant(t, ca, "team-a"), a.addTenant(t, ca, "team-b")
	var tcfg struct {
		Tenancy struct {
			Registry string `json:"registry"`
		} `json:"tenancy"`
		PeersFile string `json:"peersFile"`
	}
	mustUnmarshal(t, ca, &tcfg)
	start := func() *exec.Cmd {
		cmd := a.exec(netd, "--peers-file", tcfg.PeersFile, "--node-name", "bti-a", "--underlay-ip", "198.18.0.1",
			"--lock-dir", t.TempDir(), "--metrics-address", "", "--bpf-pin-dir", pinDirOf(t, ca),
			"--tenant-registry", tcfg.Tenancy.Registry, "--resync-interval", "1s")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	agent := start()
	stop := make(chan struct{})
	fails := make(chan string, 100)
	go func() {
		for {
			select {
			case <-stop:
				close(fails)
				return
			default:
			}
			if !a1.reach(a2, "icmp") {
				fails <- "same-tenant ping failed"
			}
			if a1.reach(b1, "icmp") {
				fails <- "cross-tenant ping succeeded"
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	_ = agent.Process.Kill()
	_ = agent.Wait()
	time.Sleep(1500 * time.Millisecond)
	agent = start()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	_ = agent.Process.Kill()
	_ = agent.Wait()
	for f := range fails {
		t.Error(f)
	}
}

// checkTenantVNIs verifies the per-tenant wire separation on the node of
// a1/b1 (node a): a rule steers each team-b pod into table 10002, whose
// route to node b's pod CIDR uses berth.3 (VNI 1+2), and team-a's into
// 10001 via berth.2.
func checkTenantVNIs(t *testing.T, pods map[string]pod) {
	t.Helper()
	for _, c := range []struct {
		pod, table, dev string
	}{{"a1", "10001", "berth.2"}, {"b1", "10002", "berth.3"}} {
		ip := pods[c.pod].ip()
		rules := run(t, "ip", "-n", pods[c.pod].node.Name, "rule", "show")
		if !strings.Contains(rules, "from "+ip+" lookup "+c.table) {
			t.Errorf("no rule steering %s (%s) into table %s:\n%s", c.pod, ip, c.table, rules)
		}
		routes := run(t, "ip", "-n", pods[c.pod].node.Name, "route", "show", "table", c.table)
		if !strings.Contains(routes, "198.18.65.0/24") || !strings.Contains(routes, "dev "+c.dev) {
			t.Errorf("table %s does not route node b's pods via %s:\n%s", c.table, c.dev, routes)
		}
	}
	// The node itself (kube-proxy SNAT, host-network clients) reaches remote
	// pods of every tenant: it leaves through the default VNI from its VTEP
	// address, which the guard does not treat as a pod.
	node := netNS{Name: pods["a1"].node.Name}
	for _, remote := range []string{"a2", "b2"} {
		if err := node.ping(pods[remote].ip()); err != nil {
			t.Errorf("node a cannot reach remote pod %s: %v", remote, err)
		}
	}
}

// TestEnforcementNeedsNetAdmin: a process in the pod without
// CAP_NET_ADMIN (every ordinary pod) cannot remove its queues, programs or
// ifb; CHECK still passes and isolation still holds afterwards.
func TestEnforcementNeedsNetAdmin(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	n := newMacvlanNode(t)
	conf := netConf(t, "1.1.0", "bti-cap", "macvlan", n.Uplink, "198.18.54.0/24", map[string]any{
		"bandwidth": map[string]any{"egressRate": 50e6, "ingressRate": 50e6},
	})
	p, other := n.addTenant(t, conf, "team-a"), n.addTenant(t, conf, "team-b")
	for _, args := range [][]string{
		{"tc", "qdisc", "del", "dev", "eth0", "root"},
		{"tc", "qdisc", "del", "dev", "eth0", "clsact"},
		{"ip", "link", "del", "bifb-eth0"},
		{"ip", "link", "set", "eth0", "address", "02:00:00:00:00:99"},
	} {
		unpriv := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}, args...)
		if out, err := p.ns.exec("setpriv", unpriv...).CombinedOutput(); err == nil {
			t.Errorf("unprivileged %v succeeded: %s", args, out)
		}
	}
	if err := n.check(t, conf, p); err != nil {
		t.Errorf("CHECK after the attempts: %v", err)
	}
	if p.reach(other, "icmp") {
		t.Error("cross-tenant ping got through after the attempts")
	}
}
