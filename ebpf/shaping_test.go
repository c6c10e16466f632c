package ebpf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// iperf runs a TCP test from client ns to server address and returns the
// receiver-side rate in bit/s.
func iperf(t *testing.T, serverNS, clientNS, addr string, secs int, parallel int) float64 {
	t.Helper()
	port := fmt.Sprint(20000 + time.Now().UnixNano()%20000)
	srv := exec.Command("nsenter", "--net=/run/netns/"+serverNS, "--", "iperf3", "-s", "-1", "-p", port)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	type result struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	var r result
	// The server needs a moment to listen; retry while it refuses.
	for i := 0; ; i++ {
		out, _ := exec.Command("nsenter", "--net=/run/netns/"+clientNS, "--", "iperf3", "-c", addr, "-p", port,
			"-t", fmt.Sprint(secs), "-P", fmt.Sprint(parallel), "-J").Output()
		r = result{}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("iperf3 output %q: %v", out, err)
		}
		if r.Error == "" || !strings.Contains(r.Error, "connect") || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.Error != "" {
		t.Fatalf("iperf3: %s", r.Error)
	}
	return r.End.SumReceived.BitsPerSecond
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
