package ebpf

import (
	"fmt"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/test/testnet"
)

// iperf measures TCP from clientNS to addr in serverNS, in bit/s.
func iperf(t *testing.T, serverNS, clientNS, addr string, secs int, parallel int) float64 {
	t.Helper()
	bps, err := testnet.IperfTCP(serverNS, clientNS, addr, secs, parallel)
	if err != nil {
		t.Fatal(err)
	}
	return bps
}

// TestShapingHTB shapes one end of a veth pair and measures with iperf3.
// The bounds are deliberately loose: this proves the shaper limits and does
// not starve; precise ratios belong to the perf report.
func TestShapingHTB(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed; run hack/install-deps.sh")
	}
	for _, rate := range []uint64{10e6, 100e6} {
		for _, dir := range []string{"egress", "ingress"} {
			t.Run(fmt.Sprintf("%s-%dM", dir, rate/1e6), func(t *testing.T) {
				m := testMaps(t)
				a, b := pair(t)
				pod := netip.MustParseAddr("198.18.90.1")
				s := Shaping{}
				if dir == "egress" {
					s.Egress.BitsPerSec = rate
				} else {
					s.Ingress.BitsPerSec = rate
				}
				inNS(t, a, func(l netlink.Link) error {
					if err := m.ApplyShaping("eth0", pod, s, PathHTB); err != nil {
						return err
					}
					return CheckShaping("eth0", s, PathHTB)
				})
				var got float64
				if dir == "egress" {
					got = iperf(t, b, a, "198.18.90.2", 3, 1)
				} else {
					got = iperf(t, a, b, "198.18.90.1", 3, 1)
				}
				ratio := got / float64(rate)
				t.Logf("%s %d Mbit/s: achieved %.1f Mbit/s (%.3fx)", dir, rate/1e6, got/1e6, ratio)
				if ratio > 1.25 || ratio < 0.5 {
					t.Errorf("achieved %.3fx of the target", ratio)
				}
				inNS(t, a, func(l netlink.Link) error { return m.RemoveShaping("eth0", pod) })
			})
		}
	}
}
