package kindperf

import (
	"bufio"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// PingResult is what ParsePing reads from iputils ping's output.
type PingResult struct {
	RTTms    []float64 // one per echo reply, in order (duplicates left out)
	Sent     int       // "N packets transmitted"
	Received int       // "M received"
}

// ParsePing reads `ping -n` output from iputils: every
// "64 bytes from A: icmp_seq=1 ttl=63 time=0.081 ms" line and the
// "N packets transmitted, M received, ..." summary. A run cut short has no
// summary; then Sent and Received are the replies seen.
func ParsePing(out string) PingResult {
	var r PingResult
	summary := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "packets transmitted") {
			for _, f := range strings.Split(l, ",") {
				f = strings.TrimSpace(f)
				n, word, ok := strings.Cut(f, " ")
				if !ok {
					continue
				}
				v, err := strconv.Atoi(n)
				if err != nil {
					continue
				}
				switch {
				case strings.HasPrefix(word, "packets transmitted"):
					r.Sent, summary = v, true
				case word == "received":
					r.Received = v
				}
			}
			continue
		}
		// A duplicate reply is the same echo answered twice: one RTT.
		if !strings.Contains(l, "bytes from") || strings.Contains(l, "DUP!") {
			continue
		}
		i := strings.Index(l, "time=")
		if i < 0 {
			continue
		}
		v := l[i+len("time="):]
		if j := strings.IndexAny(v, " m"); j >= 0 {
			v = v[:j]
		}
		if ms, err := strconv.ParseFloat(v, 64); err == nil {
			r.RTTms = append(r.RTTms, ms)
		}
	}
	if !summary {
		r.Sent, r.Received = len(r.RTTms), len(r.RTTms)
	}
	return r
}

// LateMbps is the receiver's rate from `iperf3 -J --get-server-output`
// over the server's intervals that start at or after from seconds: the
// steady state of a shaped flow, once a burst allowance is spent.
func LateMbps(out []byte, from float64) (float64, error) {
	var j struct {
		Server struct {
			Intervals []struct {
				Sum struct {
					Start   float64 `json:"start"`
					Seconds float64 `json:"seconds"`
					Bytes   float64 `json:"bytes"`
				} `json:"sum"`
			} `json:"intervals"`
		} `json:"server_output_json"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return 0, err
	}
	var bytes, secs float64
	for _, iv := range j.Server.Intervals {
		if iv.Sum.Start+1e-6 >= from {
			bytes += iv.Sum.Bytes
			secs += iv.Sum.Seconds
		}
	}
	if secs <= 0 {
		return 0, errors.New("no server interval after the start of the window")
	}
	return bytes * 8 / secs / 1e6, nil
}
