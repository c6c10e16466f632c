package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/berthdev/berth/test/perf/perfnet"
)

// The RTT probe is a small UDP echo, not ping: when the shaping queue is
// on the sender's own interface (berth shapes egress inside the pod), a
// full queue makes a raw ICMP send fail with ENOBUFS and iputils ping
// backs off and retries, which stretches its schedule past the load and
// hides the drops. Here every probe leaves on schedule; a probe the queue
// drops (or whose send fails) is counted as lost. The packets are 84 bytes
// of IP like ping's, and the shapers treat them like ping's: everything
// but ARP shares the pod's queue.

// probeResult is one probe run.
type probeResult struct {
	Sent     int       `json:"sent"`
	Received int       `json:"received"`
	RTTms    []float64 `json:"rttMs"`
}

// udpIn opens a UDP socket on a thread inside namespace ns: the socket
// belongs to that namespace for its whole life, whichever thread uses it.
func udpIn(ns string, f func() (*net.UDPConn, error)) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := perfnet.InNetns(perfnet.NSPath(ns), func() error {
		var err error
		c, err = f()
		return err
	})
	return c, err
}

const probePayload = 56 // + 8 UDP + 20 IP = 84 bytes, ping's default size

// udpProbe sends count probes, one every interval, from namespace sndNS to
// an echo responder on rcvIP:port in rcvNS, and measures each round trip.
// Late echoes are awaited up to wait after the last send.
func udpProbe(ctx context.Context, sndNS, rcvNS, rcvIP string, port, count int, interval, wait time.Duration) (probeResult, error) {
	var r probeResult
	ip := net.ParseIP(rcvIP)
	if ip == nil {
		return r, fmt.Errorf("probe: bad address %q", rcvIP)
	}
	srv, err := udpIn(rcvNS, func() (*net.UDPConn, error) { return net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port}) })
	if err != nil {
		return r, fmt.Errorf("probe echo responder in %s: %w", rcvNS, err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteToUDP(buf[:n], from)
		}
	}()
	cli, err := udpIn(sndNS, func() (*net.UDPConn, error) { return net.DialUDP("udp4", nil, &net.UDPAddr{IP: ip, Port: port}) })
	if err != nil {
		return r, fmt.Errorf("probe sender in %s: %w", sndNS, err)
	}
	defer cli.Close()

	sent := make([]time.Time, count)
	rtt := make([]time.Duration, count)
	var mu sync.Mutex
	got := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := cli.Read(buf)
			now := time.Now()
			if err != nil {
				return
			}
			if n < 4 {
				continue
			}
			seq := int(binary.BigEndian.Uint32(buf))
			mu.Lock()
			if seq < count && rtt[seq] == 0 && !sent[seq].IsZero() {
				rtt[seq] = now.Sub(sent[seq])
				got++
			}
			mu.Unlock()
		}
	}()
	pkt := make([]byte, probePayload)
	start := time.Now()
	for i := 0; i < count; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-time.After(d):
			}
		}
		binary.BigEndian.PutUint32(pkt, uint32(i))
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		r.Sent++
		// A send error (ENOBUFS from a full local queue) is a lost probe.
		_, _ = cli.Write(pkt)
	}
	// Wait for late echoes: up to twice the worst RTT seen plus 0.5 s
	// (a bloated queue drains at the shaped rate), at least 1 s, at most
	// wait.
	last := time.Now()
	for ctx.Err() == nil {
		mu.Lock()
		all := got == count
		var worst time.Duration
		for _, d := range rtt {
			worst = max(worst, d)
		}
		mu.Unlock()
		limit := min(max(2*worst+500*time.Millisecond, time.Second), wait)
		if all || time.Since(last) > limit {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cli.SetReadDeadline(time.Now())
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, d := range rtt {
		if d > 0 {
			r.RTTms = append(r.RTTms, float64(d.Microseconds())/1000)
		}
	}
	r.Received = len(r.RTTms)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if r.Received == 0 {
		return r, errors.New("probe: no echo came back")
	}
	return r, nil
}
