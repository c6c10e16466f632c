package main

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ciliumebpf "github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/cni/ipam"
	"github.com/berthdev/berth/cni/overlay/overlaytest"
	"github.com/berthdev/berth/cni/tenant"
	bebpf "github.com/berthdev/berth/ebpf"
)

// privatePinDir opens berth's maps in a throwaway pin directory
// /sys/fs/bpf/bon-<random>, removed (with every pin) when the test ends.
func privatePinDir(t *testing.T) (string, *bebpf.Maps) {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	dir := "/sys/fs/bpf/bon-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove pin dir %s: %v", dir, err)
		}
	})
	maps, err := bebpf.OpenMaps(dir)
	if err != nil {
		t.Skipf("skipping: BPF maps unavailable on this kernel: %v", err)
	}
	t.Cleanup(maps.Close)
	return dir, maps
}

// daemon is a berth-netd process running in a test namespace.
type daemon struct {
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan error
	waited bool
}

// startDaemon runs berth-netd in ns with nsenter, which switches only the
// network namespace: `ip netns exec` would also give the process a /sys of
// its own, where /sys/fs/bpf is not the bpffs holding the test's pins.
func startDaemon(t *testing.T, ns *overlaytest.NetNS, args ...string) *daemon {
	t.Helper()
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("skipping: needs nsenter (util-linux)")
	}
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns.Name, "--", os.Args[0]}, args...)...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	d := &daemon{cmd: cmd, logs: &lockedBuffer{}, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if !d.waited {
			_ = cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("berth-netd output:\n%s", d.logs.String())
		}
	})
	return d
}

// stop sends SIGTERM and expects a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		d.waited = true
		if err != nil {
			t.Fatalf("berth-netd exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("berth-netd did not exit after SIGTERM")
	}
}

// metricsIn fetches /metrics from inside ns.
func metricsIn(t *testing.T, ns *overlaytest.NetNS, addr string) string {
	t.Helper()
	code, body, err := httpGetIn(ns, addr, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v\n%s", code, err, body)
	}
	return body
}

// waitMetric polls /metrics until it contains want; the server may not be
// listening yet.
func waitMetric(t *testing.T, ns *overlaytest.NetNS, addr, want string) {
	t.Helper()
	var body string
	deadline := time.Now().Add(waitTimeout)
	for {
		code, b, err := httpGetIn(ns, addr, "/metrics")
		if err == nil && code == http.StatusOK {
			body = b
			if strings.Contains(body, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never showed %q; last:\n%s", want, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// guardOn reports whether the VNI guard sits on dev in ns.
func guardOn(t *testing.T, ns *overlaytest.NetNS, dev string) bool {
	t.Helper()
	var ok bool
	ns.Do(t, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		ok, err = bebpf.VNIGuardAttached(l.Attrs().Index)
		return err
	})
	return ok
}

// podNets lists the pod CIDR set.
func podNets(t *testing.T, maps *bebpf.Maps) []string {
	t.Helper()
	k := bebpf.AllowKeyFor(netip.MustParsePrefix("0.0.0.0/0"))
	var v uint32
	var out []string
	it := maps.PodNets.Iterate()
	for it.Next(&k, &v) {
		a := bebpf.AddrFromKey(k.Addr)
		bits := int(k.Prefixlen)
		if a.Is4() {
			bits -= 96
		}
		out = append(out, netip.PrefixFrom(a, bits).String())
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// twoNodes builds the daemon's node namespace n1 with an underlay to n2 and
// a default route (for underlay discovery), plus a peers file for both.
func twoNodes(t *testing.T) (n1 *overlaytest.NetNS, peers string) {
	t.Helper()
	overlaytest.RequireRoot(t)
	n1 = overlaytest.NewNetNS(t, "n1")
	n2 := overlaytest.NewNetNS(t, "n2")
	overlaytest.Veth(t, n1, "u0", "198.18.0.1/24", n2, "u0", "198.18.0.2/24")
	n1.IP(t, "route", "add", "default", "via", "198.18.0.254", "dev", "u0")
	peers = filepath.Join(t.TempDir(), "peers.json")
	writeFile(t, peers, `[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
		{"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"}]`)
	return n1, peers
}

// TestDaemonTenantsAndBPF: berth-netd programs one device per registered
// tenant (a tenant registered while it runs gets its device through the file
// watch alone), attaches the VNI guard to each, keeps the pod CIDR set equal
// to the peers file and exports the drop counters by tenant name.
func TestDaemonTenantsAndBPF(t *testing.T) {
	n1, peers := twoNodes(t)
	pinDir, maps := privatePinDir(t)
	dir := t.TempDir()
	reg := filepath.Join(dir, "state", "tenants.json") // directory does not exist yet

	// State from before: a pod CIDR no node has any more, and drops
	// counted for BPF tenant 2 (the registry index 1 to come).
	if err := maps.SetPodNet(netip.MustParsePrefix("198.18.99.0/24")); err != nil {
		t.Fatal(err)
	}
	perCPU := make([]uint64, ciliumebpf.MustPossibleCPU())
	perCPU[0] = 4
	perCPU[len(perCPU)-1] += 3
	if err := maps.Drops.Update(bebpf.DropKey{Tenant: 2, Reason: bebpf.DropVNI}, perCPU, ciliumebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}

	const metricsAddr = "127.0.0.1:19311"
	d := startDaemon(t, n1, "--peers-file", peers, "--node-name", "n1", "--lock-dir", filepath.Join(dir, "lock"),
		"--tenant-registry", reg, "--bpf-pin-dir", pinDir,
		"--metrics-address", metricsAddr, "--resync-interval", "1h", "--log-level", "debug")

	waitFor(t, "default tenant's route in the main table", func() bool {
		return strings.Contains(n1.IP(t, "route", "show"), "198.18.65.0/24 via 198.18.65.0 dev berth.1 onlink")
	})
	waitFor(t, "readiness", func() bool {
		code, _, err := httpGetIn(n1, metricsAddr, "/readyz")
		return err == nil && code == http.StatusOK
	})
	waitMetric(t, n1, metricsAddr, "berth_netd_bpf_available 1")
	body := metricsIn(t, n1, metricsAddr)
	for _, want := range []string{
		"berth_netd_tenant_devices 1",
		// Not registered yet: shown by id.
		`berth_tenant_dropped_packets_total{reason="foreign_vni",tenant="2"} 7`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !guardOn(t, n1, "berth.1") {
		t.Error("no VNI guard on berth.1")
	}
	// Each pod CIDR, plus its network address (the node's VTEP address,
	// marked "not a pod" so node traffic passes the guard).
	if got, want := podNets(t, maps), []string{"198.18.64.0/24", "198.18.64.0/32", "198.18.65.0/24", "198.18.65.0/32"}; !slices.Equal(got, want) {
		t.Errorf("pod CIDR set = %v, want %v", got, want)
	}

	// The CNI plugin registers a tenant; its device follows.
	if idx, err := (tenant.Registry{Path: reg}).Index("team-a"); err != nil || idx != 1 {
		t.Fatalf("register team-a: %d, %v", idx, err)
	}
	waitFor(t, "team-a's route in table 10001", func() bool {
		// The table does not exist until its first route does.
		out, _ := exec.Command("ip", "-n", n1.Name, "route", "show", "table", "10001").CombinedOutput()
		return strings.Contains(string(out), "198.18.65.0/24 via 198.18.65.0 dev berth.2 onlink")
	})
	if link := n1.IP(t, "-d", "link", "show", "berth.2"); !strings.Contains(link, "vxlan id 2 ") {
		t.Errorf("berth.2 is not VNI 2:\n%s", link)
	}
	if main := n1.IP(t, "route", "show"); strings.Contains(main, "berth.2") {
		t.Errorf("team-a's routes leaked into the main table:\n%s", main)
	}
	waitFor(t, "VNI guard on berth.2", func() bool { return guardOn(t, n1, "berth.2") })
	waitMetric(t, n1, metricsAddr, "berth_netd_tenant_devices 2")
	waitMetric(t, n1, metricsAddr, `berth_tenant_dropped_packets_total{reason="foreign_vni",tenant="team-a"} 7`)

	d.stop(t)
	for _, dev := range []string{"berth.1", "berth.2"} {
		if !guardOn(t, n1, dev) {
			t.Errorf("VNI guard on %s is gone after SIGTERM", dev)
		}
	}
}

// TestDaemonStaleEndpointGC: endpoints of this node's pod CIDR without an
// IPAM allocation are removed after two resyncs; allocated ones and those of
// other CIDRs stay.
func TestDaemonStaleEndpointGC(t *testing.T) {
	n1, peers := twoNodes(t)
	pinDir, maps := privatePinDir(t)
	dir := t.TempDir()
	ipamDir := filepath.Join(dir, "ipam")
	const network = "bon-net"

	a, err := ipam.New(network, &ipam.Config{Subnet: "198.18.64.0/24", RangeStart: "198.18.64.10", RangeEnd: "198.18.64.10", DataDir: ipamDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Allocate(ipam.Attachment{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	for addr, id := range map[string]uint32{"198.18.64.10": 1, "198.18.64.11": 2, "198.18.65.5": 2} {
		if err := maps.SetEndpoint(netip.MustParseAddr(addr), id); err != nil {
			t.Fatal(err)
		}
	}

	const metricsAddr = "127.0.0.1:19312"
	d := startDaemon(t, n1, "--peers-file", peers, "--node-name", "n1", "--lock-dir", filepath.Join(dir, "lock"),
		"--tenant-registry", filepath.Join(dir, "tenants.json"), "--bpf-pin-dir", pinDir,
		"--ipam-data-dir", ipamDir, "--network", network,
		"--metrics-address", metricsAddr, "--resync-interval", "200ms", "--log-level", "debug")

	waitMetric(t, n1, metricsAddr, "berth_netd_stale_endpoints_removed_total 1")
	eps, err := maps.ListEndpoints()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for addr := range eps {
		got = append(got, addr.String())
	}
	slices.Sort(got)
	if want := []string{"198.18.64.10", "198.18.65.5"}; !slices.Equal(got, want) {
		t.Errorf("endpoints after GC = %v, want %v", got, want)
	}
	d.stop(t)
}
