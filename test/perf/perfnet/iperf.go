package perfnet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// IperfServer is a persistent `iperf3 -s` in a pod namespace. It serves
// every repeat of its case one client at a time; cleanup stops it.
type IperfServer struct {
	P    *Proc
	Port int
	Log  string
}

// StartIperfServer starts `iperf3 -s -p port` in ns and waits until it
// listens.
func (e *Env) StartIperfServer(ctx context.Context, iperf3, ns string, port int, logDir string) (*IperfServer, error) {
	logPath := filepath.Join(logDir, fmt.Sprintf("iperf3-server-%s-%d.log", ns, port))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	// `ip netns exec` execs iperf3 in place, so the pid we hold is iperf3's.
	cmd := exec.Command("ip", "netns", "exec", ns, iperf3, "-s", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = lf, lf
	p, err := e.Start(cmd)
	if err != nil {
		return nil, err
	}
	s := &IperfServer{P: p, Port: port, Log: logPath}
	// Ready = the port is in LISTEN state in the server's namespace. We look
	// at /proc/<pid>/net/tcp{,6}, which shows the namespace of that pid,
	// instead of probing with a connection (which iperf3 would count as a
	// client).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.Exited() {
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("iperf3 server in %s exited: %s", ns, Tail(strings.TrimSpace(string(b)), 300))
		}
		if Listening(p.Cmd.Process.Pid, port) {
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

// Listening reports whether pid's network namespace has a TCP socket in
// LISTEN state (st 0A) on port.
func Listening(pid, port int) bool {
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

// IperfSample is one client run, as netperf records it.
type IperfSample struct {
	Gbps        float64 `json:"gbps"`
	Retransmits int     `json:"retransmits"`
	CPUClient   float64 `json:"cpuClientPct"`
	CPUServer   float64 `json:"cpuServerPct"`
	Repeat      int     `json:"repeat"`
	Order       int     `json:"order"` // position in the whole run, to see drift
	Error       string  `json:"error,omitempty"`
}

// IperfInterval is one reporting interval of the local side: with -R the
// client is the receiver, so these are bytes that arrived.
type IperfInterval struct {
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	Bytes         float64 `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Omitted       bool    `json:"omitted"`
}

// IperfJSON is the part of `iperf3 -J` output the suites read.
type IperfJSON struct {
	Error     string `json:"error"`
	Intervals []struct {
		Sum IperfInterval `json:"sum"`
	} `json:"intervals"`
	End struct {
		SumSent struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Seconds       float64 `json:"seconds"`
			Bytes         float64 `json:"bytes"`
		} `json:"sum_received"`
		CPU struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
}

// DecodeIperf parses `iperf3 -J` output and rejects runs without a
// receiver-side result.
func DecodeIperf(out []byte) (*IperfJSON, error) {
	var j IperfJSON
	if err := json.Unmarshal(out, &j); err != nil {
		return nil, fmt.Errorf("parse iperf3 JSON: %v: %s", err, Tail(strings.TrimSpace(string(out)), 200))
	}
	if j.Error != "" {
		return nil, errors.New("iperf3: " + j.Error)
	}
	if j.End.SumReceived.BitsPerSecond <= 0 {
		return nil, errors.New("iperf3: no sum_received in result")
	}
	return &j, nil
}

// ParseIperf extracts a sample from `iperf3 -c ... -J` output: the
// receiver-side sum (what actually arrived) in Gbit/s.
func ParseIperf(out []byte) (IperfSample, error) {
	j, err := DecodeIperf(out)
	if err != nil {
		return IperfSample{}, err
	}
	return IperfSample{
		Gbps:        j.End.SumReceived.BitsPerSecond / 1e9,
		Retransmits: j.End.SumSent.Retransmits,
		CPUClient:   j.End.CPU.HostTotal,
		CPUServer:   j.End.CPU.RemoteTotal,
	}, nil
}

// IperfClient describes one `iperf3 -c` run from a namespace.
type IperfClient struct {
	Iperf3   string
	NS       string // client namespace
	ServerIP string
	Port     int
	Streams  int
	Duration time.Duration // rounded to whole seconds, at least 1 s
	// Reverse (-R) makes the server send and the client receive, so the
	// client's intervals are receiver-side measurements.
	Reverse bool
	// Interval is the reporting interval (-i); 0 leaves iperf3's default.
	Interval time.Duration
}

// Args is the iperf3 command line (after `ip netns exec NS`).
func (c IperfClient) Args() []string {
	secs := int(c.Duration.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := []string{c.Iperf3, "-c", c.ServerIP, "-p", strconv.Itoa(c.Port),
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(max(c.Streams, 1)), "-J", "--connect-timeout", "3000"}
	if c.Reverse {
		args = append(args, "-R")
	}
	if c.Interval > 0 {
		args = append(args, "-i", strconv.FormatFloat(math.Max(c.Interval.Seconds(), 0.1), 'f', -1, 64))
	}
	return args
}

// Run performs the measurement, retrying connection errors (server still
// starting, ARP/FDB not settled, previous test not yet torn down on the
// server side). It returns the decoded JSON and the raw output.
func (c IperfClient) Run(ctx context.Context) (*IperfJSON, []byte, error) {
	args := append([]string{"netns", "exec", c.NS}, c.Args()...)
	var lastErr error
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 300 * time.Millisecond):
			}
		}
		cctx, cancel := context.WithTimeout(ctx, c.Duration+30*time.Second)
		cmd := exec.CommandContext(cctx, "ip", args...)
		out, runErr := cmd.Output()
		cancel()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		j, err := DecodeIperf(out)
		if err == nil {
			return j, out, nil
		}
		if runErr != nil && len(out) == 0 {
			err = fmt.Errorf("iperf3 client: %v", runErr)
		}
		lastErr = err
		if !Retryable(err) {
			break
		}
	}
	return nil, nil, lastErr
}

// RunIperfClient runs one measurement from clientNS to serverIP:port and
// returns netperf's sample.
func RunIperfClient(ctx context.Context, iperf3, clientNS, serverIP string, port, streams int, dur time.Duration) (IperfSample, error) {
	_, out, err := IperfClient{Iperf3: iperf3, NS: clientNS, ServerIP: serverIP, Port: port, Streams: streams, Duration: dur}.Run(ctx)
	if err != nil {
		return IperfSample{}, err
	}
	return ParseIperf(out)
}

// Retryable reports whether an iperf3 failure looks like a connection
// problem worth another attempt.
func Retryable(err error) bool {
	m := err.Error()
	for _, s := range []string{"unable to connect", "server is busy", "Connection refused", "No route to host", "connect", "unable to receive"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// StreamResult is the samples of one stream count of a throughput case,
// with their median and range (filled by the suite's summary step).
type StreamResult struct {
	Streams    int           `json:"streams"`
	Samples    []IperfSample `json:"samples"`
	MedianGbps *float64      `json:"medianGbps"`
	MinGbps    *float64      `json:"minGbps"`
	MaxGbps    *float64      `json:"maxGbps"`
	Errors     int           `json:"errors"`
}

// Gbps returns the rates of the samples that succeeded.
func (s *StreamResult) Gbps() []float64 {
	var xs []float64
	for _, x := range s.Samples {
		if x.Error == "" {
			xs = append(xs, x.Gbps)
		}
	}
	return xs
}
