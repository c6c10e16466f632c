package overlay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/cni/overlay/overlaytest"
)

// podGateway is the pods' default gateway: a link-local address on the host
// end of every pod veth, the same on every node (Calico-style), so the pod
// side needs no per-node configuration.
const podGateway = "169.254.1.1"

// addPod creates a pod namespace behind node n: a veth whose pod end has
// podIP/32 and a default route via podGateway, and whose host end has
// podGateway/32 and a host route to the pod. This is the routed-veth layout
// berth-cni's vxlan mode gives pods.
func addPod(t *testing.T, n *node, podIP string) *overlaytest.NetNS {
	t.Helper()
	return addTenantPod(t, n, "pod0", podIP, 0)
}

// addTenantPod is addPod with the host end named hostIf and, for a pod of a
// tenant with a routing table of its own (table != 0), the rule
// `from <podIP> lookup <table>` that the CNI plugin adds to steer the pod's
// traffic into its tenant's overlay.
func addTenantPod(t *testing.T, n *node, hostIf, podIP string, table int) *overlaytest.NetNS {
	t.Helper()
	pod := overlaytest.NewNetNS(t, "p"+n.name[1:])
	overlaytest.Veth(t, n.NetNS, hostIf, podGateway+"/32", pod, "eth0", podIP+"/32")
	pod.IP(t, "route", "add", podGateway, "dev", "eth0", "scope", "link")
	pod.IP(t, "route", "add", "default", "via", podGateway, "dev", "eth0")
	n.IP(t, "route", "add", podIP+"/32", "dev", hostIf, "scope", "link")
	if table != 0 {
		n.IP(t, "rule", "add", "from", podIP, "lookup", strconv.Itoa(table))
	}
	n.Do(t, ip.EnableIP4Forward)
	return pod
}

// echoServer listens on addr inside ns and echoes one line per connection.
func echoServer(t *testing.T, ns *overlaytest.NetNS, addr string) {
	t.Helper()
	var ln net.Listener
	// The socket belongs to the namespace it was created in; accepting can
	// then happen on any thread.
	ns.Do(t, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(waitTimeout))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					_, _ = io.WriteString(c, line)
				}
			}()
		}
	}()
}

// tcpEcho connects from inside ns to addr and checks the echo.
func tcpEcho(ns *overlaytest.NetNS, addr string) error {
	return ns.Run(func() error {
		// net.Dial creates the socket on this goroutine, which Run has
		// locked into the namespace.
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "hello berth\n"); err != nil {
			return err
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if got != "hello berth\n" {
			return fmt.Errorf("echo = %q", got)
		}
		return nil
	})
}

func vxlanCounters(t *testing.T, n *node) (tx, rx uint64) {
	t.Helper()
	n.Do(t, func() error {
		l, err := netlink.LinkByName(n.dev.Name())
		if err != nil {
			return err
		}
		s := l.Attrs().Statistics
		if s == nil {
			return errors.New("no link statistics")
		}
		tx, rx = s.TxPackets, s.RxPackets
		return nil
	})
	return tx, rx
}

func TestDataPathAcrossNodes(t *testing.T) {
	n1, n2 := newCluster(t)
	pod1 := addPod(t, n1, "198.18.64.2")
	pod2 := addPod(t, n2, "198.18.65.2")

	peersFile := t.TempDir() + "/peers.json"
	writeAtomic(t, peersFile, peersJSON(t, n1.peer(), n2.peer()))
	peers, err := LoadPeers(peersFile)
	if err != nil {
		t.Fatal(err)
	}
	n1.reconcile(t, peers)
	n2.reconcile(t, peers)

	tx1, _ := vxlanCounters(t, n1)
	_, rx2 := vxlanCounters(t, n2)

	echoServer(t, pod2, "198.18.65.2:7777")
	echoServer(t, pod1, "198.18.64.2:7777")
	if err := tcpEcho(pod1, "198.18.65.2:7777"); err != nil {
		t.Fatalf("pod on n1 -> pod on n2: %v", err)
	}
	if err := tcpEcho(pod2, "198.18.64.2:7777"); err != nil {
		t.Fatalf("pod on n2 -> pod on n1: %v", err)
	}
	// The node itself reaches remote pods too: it sources the traffic from
	// its device address (198.18.64.0), which the other node routes back
	// over the overlay.
	if err := tcpEcho(n1.NetNS, "198.18.65.2:7777"); err != nil {
		t.Fatalf("node n1 -> pod on n2: %v", err)
	}

	// The pod CIDRs are reachable only through the VXLAN devices (there
	// is no other route), but check the counters to be sure the traffic
	// was encapsulated.
	if tx, _ := vxlanCounters(t, n1); tx <= tx1 {
		t.Errorf("n1 %s sent no packets (tx %d -> %d)", n1.dev.Name(), tx1, tx)
	}
	if _, rx := vxlanCounters(t, n2); rx <= rx2 {
		t.Errorf("n2 %s received no packets (rx %d -> %d)", n2.dev.Name(), rx2, rx)
	}

	if _, err := exec.LookPath("ping"); err != nil {
		t.Log("ping not installed (Debian: iputils-ping); ICMP check skipped, TCP check passed")
	} else {
		for _, c := range []struct {
			from *overlaytest.NetNS
			to   string
		}{{pod1, "198.18.65.2"}, {pod2, "198.18.64.2"}} {
			if out, err := c.from.Exec("ping", "-c", "2", "-i", "0.2", "-W", "1", c.to); err != nil {
				t.Errorf("ping %s from %s: %v\n%s", c.to, c.from.Name, err, out)
			}
		}
	}

	// Removing n2 from the peers of n1 cuts the path.
	n1.reconcile(t, []Peer{n1.peer()})
	if err := tcpEcho(pod1, "198.18.65.2:7777"); err == nil {
		t.Error("pod on n1 still reaches pod on n2 after n2 was removed from the peers")
	}
}
