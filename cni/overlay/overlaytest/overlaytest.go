// Package overlaytest has helpers for tests that build throwaway network
// topologies in network namespaces: a namespace per simulated node or pod,
// named "bon-<role>-<random>" so leftovers of a killed test run are easy to
// spot (`ip netns list | grep ^bon-`), and always removed by t.Cleanup.
//
// Nothing here touches the host's own network namespace or links.
package overlaytest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// RequireRoot skips the test unless it runs as root, which creating network
// namespaces and links needs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces, veth and VXLAN links (run the tests as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: needs the ip command (iproute2)")
	}
}

// NetNS is a named network namespace created for one test.
type NetNS struct {
	Name string
	ns.NetNS
}

// NewNetNS creates the namespace "bon-<role>-<random>" with its loopback up,
// and deletes it (with every link inside) when the test ends.
func NewNetNS(t testing.TB, role string) *NetNS {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "bon-" + role + "-" + hex.EncodeToString(b[:])
	IP(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	h, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	// Registered after the deletion, so it runs first (cleanups are LIFO).
	t.Cleanup(func() { _ = h.Close() })
	n := &NetNS{Name: name, NetNS: h}
	n.IP(t, "link", "set", "lo", "up")
	return n
}

// Do runs f on a goroutine locked into the namespace and fails the test if
// f returns an error.
func (n *NetNS) Do(t testing.TB, f func() error) {
	t.Helper()
	if err := n.NetNS.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatalf("in %s: %v", n.Name, err)
	}
}

// Run runs f on a goroutine locked into the namespace and returns its error.
func (n *NetNS) Run(f func() error) error {
	return n.NetNS.Do(func(ns.NetNS) error { return f() })
}

// IP runs `ip -n <ns> args...` and returns its output, failing the test on
// error.
func (n *NetNS) IP(t testing.TB, args ...string) string {
	t.Helper()
	return IP(t, append([]string{"-n", n.Name}, args...)...)
}

// Exec runs a command inside the namespace (`ip netns exec`) and returns its
// combined output and error without failing the test.
func (n *NetNS) Exec(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...).CombinedOutput()
	return string(out), err
}

// IP runs `ip args...` and returns its output, failing the test on error.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Veth connects two namespaces with a veth pair: a gets link nameA with
// address cidrA, b gets nameB with cidrB (either address may be empty). Both
// ends are brought up.
func Veth(t testing.TB, a *NetNS, nameA, cidrA string, b *NetNS, nameB, cidrB string) {
	t.Helper()
	a.IP(t, "link", "add", nameA, "type", "veth", "peer", "name", nameB, "netns", b.Name)
	for _, end := range []struct {
		n          *NetNS
		link, cidr string
	}{{a, nameA, cidrA}, {b, nameB, cidrB}} {
		if end.cidr != "" {
			args := []string{"addr", "add", end.cidr, "dev", end.link}
			if strings.Contains(end.cidr, ":") {
				// Test addresses are unique by construction; DAD would only
				// keep them tentative (unusable) for a while.
				args = append(args, "nodad")
			}
			end.n.IP(t, args...)
		}
		end.n.IP(t, "link", "set", end.link, "up")
	}
}
