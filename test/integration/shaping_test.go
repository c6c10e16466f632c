package integration

import (
	"fmt"
	"os/exec"
	"testing"

	"github.com/berthdev/berth/test/testnet"
)

// iperfRate measures TCP from client to server (pods), in bit/s.
func iperfRate(t *testing.T, server, client pod, secs int) float64 {
	t.Helper()
	bps, err := testnet.IperfTCP(server.ns.Name, client.ns.Name, server.ip(), secs, 1)
	if err != nil {
		t.Fatal(err)
	}
	return bps
}

// TestBandwidthShaping shapes one pod per mode, direction and rate through
// the CNI bandwidth capability and measures with iperf3. Bounds are loose
// (0.5x-1.25x): this proves the limit holds and TCP is not starved; the
// precise accuracy figures are in the perf report. At 1 Gbit/s only the
// upper bound is asserted: whether the ifb ingress path reaches 1 Gbit/s at
// all depends on the machine's CPU (one VM of this kind measured 0.3-0.4x
// with the shaper and without any change to it), and a throughput floor
// there would be a timing assertion.
func TestBandwidthShaping(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed; run hack/install-deps.sh")
	}
	for _, m := range modes() {
		for _, rate := range []uint64{10e6, 100e6, 1e9} {
			for _, dir := range []string{"egress", "ingress"} {
				t.Run(fmt.Sprintf("%s/%s-%dM", m.mode, dir, rate/1e6), func(t *testing.T) {
					n, conf := m.setup(t)
					bw := map[string]any{"egressRate": 0, "ingressRate": 0}
					bw[dir+"Rate"] = rate
					shaped := n.add(t, setJSON(t, conf, "runtimeConfig", map[string]any{"bandwidth": bw}))
					other := n.add(t, conf)
					if err := n.check(t, setJSON(t, conf, "runtimeConfig", map[string]any{"bandwidth": bw}), shaped); err != nil {
						t.Errorf("CHECK of the shaped pod: %v", err)
					}
					var got float64
					if dir == "egress" {
						got = iperfRate(t, other, shaped, 2)
					} else {
						got = iperfRate(t, shaped, other, 2)
					}
					ratio := got / float64(rate)
					t.Logf("%s %s %d Mbit/s: %.1f Mbit/s (%.3fx)", m.mode, dir, rate/1e6, got/1e6, ratio)
					if ratio > 1.25 || (ratio < 0.5 && rate < 1e9) {
						t.Errorf("achieved %.3fx of the %d Mbit/s target", ratio, rate/1e6)
					}
					// DEL removes the queues, programs and the ifb with the pod.
					n.del(t, conf, shaped)
					if got := shaped.ns.links(t); len(got) != 1 {
						t.Errorf("links left in the shaped pod after DEL: %v", got)
					}
				})
			}
		}
	}
}
