// Package testnet holds helpers shared by root tests that measure traffic
// between network namespaces.
package testnet

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"time"
)

// NSExec runs name inside the named network namespace (/run/netns/ns).
// nsenter is used instead of `ip netns exec`, which remounts /sys.
func NSExec(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "--", name}, args...)...)
}

// IperfTCP runs one iperf3 TCP test from clientNS to addr, where a
// one-shot server is started in serverNS, and returns the receiver's
// rate in bit/s.
func IperfTCP(serverNS, clientNS, addr string, secs, parallel int) (float64, error) {
	port := fmt.Sprint(20000 + rand.IntN(30000))
	srv := NSExec(serverNS, "iperf3", "-s", "-1", "-p", port)
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	// The server needs a moment to listen; retry while it refuses.
	for i := 0; ; i++ {
		out, _ := NSExec(clientNS, "iperf3", "-c", addr, "-p", port,
			"-t", fmt.Sprint(secs), "-P", fmt.Sprint(parallel), "-J").Output()
		r.Error = ""
		if err := json.Unmarshal(out, &r); err != nil {
			return 0, fmt.Errorf("iperf3 output %q: %w", out, err)
		}
		if r.Error == "" || !strings.Contains(r.Error, "connect") || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}
