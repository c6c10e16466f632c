package ebpf

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/ebpf/attach"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
}

func rnd() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

// testMaps pins a private set of maps so tests never touch a node's state.
func testMaps(t *testing.T) *Maps {
	t.Helper()
	dir := filepath.Join(filepath.Dir(DefaultPinDir), "btb"+rnd())
	m, err := OpenMaps(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); os.RemoveAll(dir) })
	return m
}

// pair makes two namespaces joined by a veth: a (198.18.90.1) and b (.2).
func pair(t *testing.T) (a, b string) {
	t.Helper()
	a, b = "btba"+rnd(), "btbb"+rnd()
	for _, n := range []string{a, b} {
		sh(t, "ip", "netns", "add", n)
		name := n
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	}
	sh(t, "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	sh(t, "ip", "-n", a, "addr", "add", "198.18.90.1/24", "dev", "eth0")
	sh(t, "ip", "-n", b, "addr", "add", "198.18.90.2/24", "dev", "eth0")
	sh(t, "ip", "-n", a, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", b, "link", "set", "eth0", "up")
	return a, b
}

func ping(from, to string) bool {
	return exec.Command("nsenter", "--net=/run/netns/"+from, "--", "ping", "-c", "1", "-W", "1", to).Run() == nil
}

// pingOK is ping for a path that must work: up to three tries, because a
// neighbour entry that went stale while the path was dropping needs one
// round of resolution first, and a loaded machine may miss one 1 s window.
// (An expected drop keeps the single try of ping.)
func pingOK(from, to string) bool {
	for i := 0; i < 3; i++ {
		if ping(from, to) {
			return true
		}
	}
	return false
}

// inNS runs f in netns name with the link eth0.
func inNS(t *testing.T, name string, f func(l netlink.Link) error) {
	t.Helper()
	err := ns.WithNetNSPath("/run/netns/"+name, func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return f(l)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestIsolationPolicy(t *testing.T) {
	requireRoot(t)
	for _, mode := range []attach.Mode{attach.ModeTCX, attach.ModeClsBPF} {
		t.Run(string(mode), func(t *testing.T) {
			attach.Prefer(mode)
			defer attach.Prefer("")
			m := testMaps(t)
			a, b := pair(t)
			ipA, ipB := netip.MustParseAddr("198.18.90.1"), netip.MustParseAddr("198.18.90.2")
			inNS(t, a, func(l netlink.Link) error {
				got, err := m.AttachIsolation(l.Attrs().Index, PodIdentity{Tenant: 1, IPv4: ipA, MAC: l.Attrs().HardwareAddr, CheckMAC: true})
				if err == nil && got != mode {
					t.Errorf("attached with %s, want %s", got, mode)
				}
				return err
			})
			steps := []struct {
				name  string
				setup func()
				want  bool
			}{
				{"unknown peer is reachable", func() {}, true},
				{"peer in another tenant", func() { must(t, m.SetEndpoint(ipB, 2)) }, false},
				{"peer in the same tenant", func() { must(t, m.SetEndpoint(ipB, 1)) }, true},
				{"peer moved away again", func() { must(t, m.SetEndpoint(ipB, 3)) }, false},
				{"peer allow-listed", func() { must(t, m.SetAllow(netip.MustParsePrefix("198.18.90.2/32"), nil)) }, true},
				{"allow-list entry removed", func() { must(t, m.ClearAllowExcept(nil)) }, false},
			}
			for _, s := range steps {
				s.setup()
				if got := ping(a, "198.18.90.2"); got != s.want {
					t.Errorf("%s: a->b ping = %v, want %v", s.name, got, s.want)
				}
				if got := ping(b, "198.18.90.1"); got != s.want {
					t.Errorf("%s: b->a ping = %v, want %v", s.name, got, s.want)
				}
			}
			drops, err := m.DropCounts()
			if err != nil {
				t.Fatal(err)
			}
			if drops[DropKey{Tenant: 1, Reason: DropTenant}] == 0 {
				t.Errorf("no cross-tenant drops counted: %v", drops)
			}

			// A spoofed source address from a's side is dropped.
			sh(t, "ip", "-n", a, "addr", "add", "198.18.90.9/24", "dev", "eth0")
			if exec.Command("nsenter", "--net=/run/netns/"+a, "--", "ping", "-c", "1", "-W", "1", "-I", "198.18.90.9", "198.18.90.2").Run() == nil {
				t.Error("ping from a spoofed source got through")
			}
			if d, _ := m.DropCounts(); d[DropKey{Tenant: 1, Reason: DropSpoof}] == 0 {
				t.Errorf("no spoof drops counted: %v", d)
			}

			inNS(t, a, func(l netlink.Link) error {
				if ok, err := IsolationAttached(l.Attrs().Index); err != nil || !ok {
					t.Errorf("IsolationAttached = %v, %v", ok, err)
				}
				if err := DetachIsolation(l.Attrs().Index); err != nil {
					return err
				}
				if ok, _ := IsolationAttached(l.Attrs().Index); ok {
					t.Error("still attached after DetachIsolation")
				}
				return nil
			})
			must(t, m.SetEndpoint(ipB, 2))
			if !pingOK(a, "198.18.90.2") {
				t.Error("detached isolation still drops")
			}
		})
	}
}

// TestIsolationRemote covers berth_remote, berth-netd's map of addresses
// that are not this node's pods: a remote pod's tenant, 0 for one whose
// tenant is not known (foreign to every tenant), a flat network's subnet as
// the default tenant's for its unknown addresses, the longest prefix
// winning, and this node's own endpoints taking precedence over all of it.
func TestIsolationRemote(t *testing.T) {
	requireRoot(t)
	m := testMaps(t)
	a, b := pair(t)
	ipA, ipB := netip.MustParseAddr("198.18.90.1"), netip.MustParseAddr("198.18.90.2")
	const own, other, defaultID = 2, 3, 1
	inNS(t, a, func(l netlink.Link) error {
		_, err := m.AttachIsolation(l.Attrs().Index, PodIdentity{Tenant: own, IPv4: ipA, MAC: l.Attrs().HardwareAddr, CheckMAC: true})
		return err
	})
	hostB := netip.PrefixFrom(ipB, 32)
	subnet := netip.MustParsePrefix("198.18.90.0/24")
	steps := []struct {
		name  string
		setup func()
		want  bool
	}{
		{"unknown address, no flat subnet: passes", func() {}, true},
		{"remote pod of another tenant", func() { must(t, m.SetRemote(hostB, other)) }, false},
		{"remote pod of the same tenant", func() { must(t, m.SetRemote(hostB, own)) }, true},
		{"remote pod whose tenant is not known yet", func() { must(t, m.SetRemote(hostB, 0)) }, false},
		{"unknown address of a flat subnet counts as the default tenant", func() {
			must(t, m.DeleteRemote(hostB))
			must(t, m.SetRemote(subnet, defaultID))
		}, false},
		{"the pod's own entry beats the subnet's", func() { must(t, m.SetRemote(hostB, own)) }, true},
		{"this node's endpoint beats berth_remote", func() { must(t, m.SetEndpoint(ipB, other)) }, false},
		{"endpoint gone, remote entry again", func() { must(t, m.DeleteEndpoint(ipB)) }, true},
	}
	for _, s := range steps {
		s.setup()
		if got := ping(a, ipB.String()); got != s.want {
			t.Errorf("%s: a->b ping = %v, want %v", s.name, got, s.want)
		}
		if got := ping(b, ipA.String()); got != s.want {
			t.Errorf("%s: b->a ping = %v, want %v", s.name, got, s.want)
		}
	}
	got, err := m.ListRemote()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[netip.Prefix]uint32{hostB: own, subnet: defaultID}; len(got) != len(want) || got[hostB] != own || got[subnet] != defaultID {
		t.Errorf("ListRemote = %v, want %v", got, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = net.IPv4len
var _ = strings.Contains
