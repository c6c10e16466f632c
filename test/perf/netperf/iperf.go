package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// iperfServer is a persistent `iperf3 -s` in a pod namespace. It serves
// every repeat of its case one client at a time; cleanup stops it.
type iperfServer struct {
	p    *proc
	port int
	log  string
}

func (e *env) startIperfServer(ctx context.Context, iperf3, ns string, port int, logDir string) (*iperfServer, error) {
	logPath := filepath.Join(logDir, fmt.Sprintf("iperf3-server-%s-%d.log", ns, port))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	// `ip netns exec` execs iperf3 in place, so the pid we hold is iperf3's.
	cmd := exec.Command("ip", "netns", "exec", ns, iperf3, "-s", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = lf, lf
	p, err := e.start(cmd)
	if err != nil {
		return nil, err
	}
	s := &iperfServer{p: p, port: port, log: logPath}
	// Ready = the port is in LISTEN state in the server's namespace. We look
	// at /proc/<pid>/net/tcp{,6}, which shows the namespace of that pid,
	// instead of probing with a connection (which iperf3 would count as a
	// client).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.exited() {
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("iperf3 server in %s exited: %s", ns, tail(strings.TrimSpace(string(b)), 300))
		}
		if listening(p.cmd.Process.Pid, port) {
			return s, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("iperf3 server in %s not listening on %d after 10s", ns, port)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// listening reports whether pid's network namespace has a TCP socket in
// LISTEN state (st 0A) on port.
func listening(pid, port int) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"tcp6", "tcp"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
				fh.Close()
				return true
			}
		}
		fh.Close()
	}
	return false
}

// iperfSample is one client run.
type iperfSample struct {
	Gbps        float64 `json:"gbps"`
	Retransmits int     `json:"retransmits"`
	CPUClient   float64 `json:"cpuClientPct"`
	CPUServer   float64 `json:"cpuServerPct"`
	Repeat      int     `json:"repeat"`
	Order       int     `json:"order"` // position in the whole run, to see drift
	Error       string  `json:"error,omitempty"`
}

// iperfJSON is the part of `iperf3 -J` output we read.
type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		CPU struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
}

// parseIperf extracts a sample from `iperf3 -c ... -J` output: the
// receiver-side sum (what actually arrived) in Gbit/s.
func parseIperf(out []byte) (iperfSample, error) {
	var j iperfJSON
	if err := json.Unmarshal(out, &j); err != nil {
		return iperfSample{}, fmt.Errorf("parse iperf3 JSON: %v: %s", err, tail(strings.TrimSpace(string(out)), 200))
	}
	if j.Error != "" {
		return iperfSample{}, errors.New("iperf3: " + j.Error)
	}
	if j.End.SumReceived.BitsPerSecond <= 0 {
		return iperfSample{}, errors.New("iperf3: no sum_received in result")
	}
	return iperfSample{
		Gbps:        j.End.SumReceived.BitsPerSecond / 1e9,
		Retransmits: j.End.SumSent.Retransmits,
		CPUClient:   j.End.CPU.HostTotal,
		CPUServer:   j.End.CPU.RemoteTotal,
	}, nil
}

// runIperfClient runs one measurement from clientNS to serverIP:port,
// retrying connection errors (server still starting, ARP/FDB not settled,
// previous test not yet torn down on the server side).
func runIperfClient(ctx context.Context, iperf3, clientNS, serverIP string, port, streams int, dur time.Duration) (iperfSample, error) {
	secs := int(dur.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := []string{"netns", "exec", clientNS, iperf3, "-c", serverIP, "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J", "--connect-timeout", "3000"}
	var lastErr error
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return iperfSample{}, ctx.Err()
			case <-time.After(time.Duration(attempt) * 300 * time.Millisecond):
			}
		}
		cctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
		cmd := exec.CommandContext(cctx, "ip", args...)
		out, runErr := cmd.Output()
		cancel()
		if ctx.Err() != nil {
			return iperfSample{}, ctx.Err()
		}
		s, err := parseIperf(out)
		if err == nil {
			return s, nil
		}
		if runErr != nil && len(out) == 0 {
			err = fmt.Errorf("iperf3 client: %v", runErr)
		}
		lastErr = err
		if !retryable(err) {
			break
		}
	}
	return iperfSample{}, lastErr
}

func retryable(err error) bool {
	m := err.Error()
	for _, s := range []string{"unable to connect", "server is busy", "Connection refused", "No route to host", "connect", "unable to receive"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}
