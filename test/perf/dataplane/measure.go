package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/berthdev/berth/test/perf/perfnet"
)

var directions = []string{"egress", "ingress"}

// loadLead is how long the load runs before the first probe (the queue
// fills in well under that); the load also outlasts the probe by ~1 s.
const loadLead = time.Second

// probeInterval spaces the RTT probes (ping -i 0.05).
const probeInterval = 50 * time.Millisecond

// overshootWindow is the start of a transfer whose peak is reported.
const overshootWindow = time.Second

// shapeSample is one iperf3 run through a shaped direction. The client
// runs in the receiving pod with -R and -i 0.1, so every interval is what
// arrived at the receiver in that 100 ms.
type shapeSample struct {
	Repeat      int       `json:"repeat"`
	Order       int       `json:"order"` // position in the whole run, to see drift
	Mbps        float64   `json:"mbps"`  // end.sum_received.bits_per_second / 1e6
	Ratio       float64   `json:"ratio"` // Mbps / target
	FirstMax    float64   `json:"firstSecondMaxRatio"`
	FirstAvg    float64   `json:"firstSecondAvgRatio"`
	SteadyMax   float64   `json:"steadyMaxRatio"`
	SteadyAvg   float64   `json:"steadyRatio"` // goodput after the first second / target
	Retransmits int       `json:"retransmits"`
	Intervals   []float64 `json:"intervalsMbps,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// intervalStats turns receiver intervals into the overshoot figures:
// the highest 100 ms rate that started within the first second, the
// average over the first second, and the highest 100 ms rate after it (the
// same statistic in steady state: how much of the first-second peak is
// just the jitter of 100 ms receive windows), and the average rate after
// the first second (the shaper's rate without its initial burst). Intervals shorter than 50 ms
// (the ragged end of a run) are skipped: a few packets in a short window
// read as a huge rate.
func intervalStats(iv []perfnet.IperfInterval, target float64) (firstMax, firstAvg, steadyMax, steadyAvg float64) {
	w := overshootWindow.Seconds()
	var bytes, secs, sBytes, sSecs float64
	for _, x := range iv {
		d := x.End - x.Start
		if d < 0.05 || x.Omitted {
			continue
		}
		r := x.Bytes * 8 / d / target
		if x.Start < w-1e-6 {
			firstMax = math.Max(firstMax, r)
			bytes += x.Bytes
			secs = math.Max(secs, x.End)
		} else {
			steadyMax = math.Max(steadyMax, r)
			sBytes += x.Bytes
			sSecs += d
		}
	}
	if secs > 0 {
		firstAvg = bytes * 8 / secs / target
	}
	if sSecs > 0 {
		steadyAvg = sBytes * 8 / sSecs / target
	}
	return firstMax, firstAvg, steadyMax, steadyAvg
}

func (h *harness) shapeRun(ctx context.Context, c *shapeCase, rate uint64, dir string, streams int) shapeSample {
	p := c.Shaped[mbit(rate)]
	snd, rcv := endpointsFor(c, p, dir)
	j, _, err := perfnet.IperfClient{Iperf3: h.opts.iperf3, NS: rcv.NS, ServerIP: snd.IP, Port: h.opts.basePort,
		Streams: streams, Duration: h.opts.duration, Reverse: true, Interval: 100 * time.Millisecond}.Run(ctx)
	if err != nil {
		return shapeSample{Error: err.Error()}
	}
	target := float64(rate)
	s := shapeSample{Mbps: j.End.SumReceived.BitsPerSecond / 1e6, Retransmits: j.End.SumSent.Retransmits}
	s.Ratio = j.End.SumReceived.BitsPerSecond / target
	var iv []perfnet.IperfInterval
	for _, x := range j.Intervals {
		iv = append(iv, x.Sum)
		s.Intervals = append(s.Intervals, math.Round(x.Sum.BitsPerSecond/1e4)/100)
	}
	s.FirstMax, s.FirstAvg, s.SteadyMax, s.SteadyAvg = intervalStats(iv, target)
	return s
}

// runAccuracy measures every case at every rate, direction and stream
// count. Each repeat walks the configurations in turn and, within one
// configuration, all cases back to back with a rotating start (A B C D,
// B C D A, ...), so drift of a noisy VM spreads over every case.
func (h *harness) runAccuracy(ctx context.Context, rep *dpReport, cases []*shapeCase) {
	type conf struct {
		rate    uint64
		dir     string
		streams int
	}
	var confs []conf
	for _, r := range h.opts.rates {
		for _, d := range directions {
			for _, st := range h.opts.streams {
				confs = append(confs, conf{r, d, st})
			}
		}
	}
	cells := map[string]*accCell{}
	key := func(c string, x conf) string { return fmt.Sprintf("%s/%d/%s/%d", c, x.rate, x.dir, x.streams) }
	for _, x := range confs {
		for _, c := range rep.Cases {
			if !c.measures(x.streams) {
				continue
			}
			cell := &accCell{Case: c.Name, Kind: c.Kind, RateBps: x.rate, Rate: mbit(x.rate), Dir: x.dir, Streams: x.streams}
			cells[key(c.Name, x)] = cell
			rep.Accuracy = append(rep.Accuracy, cell)
		}
	}
	if len(cases) == 0 {
		return
	}
	total := 0
	for _, x := range confs {
		for _, c := range cases {
			if c.measures(x.streams) {
				total += h.opts.repeats
			}
		}
	}
	n := 0
	for r := 0; r < h.opts.repeats; r++ {
		for ci, x := range confs {
			rot := (r*len(confs) + ci) % len(cases)
			for k := range cases {
				c := cases[(rot+k)%len(cases)]
				if ctx.Err() != nil {
					return
				}
				if !c.measures(x.streams) {
					continue
				}
				n++
				s := h.shapeRun(ctx, c, x.rate, x.dir, x.streams)
				if ctx.Err() != nil {
					return
				}
				s.Repeat, s.Order = r+1, n
				cell := cells[key(c.Name, x)]
				cell.Samples = append(cell.Samples, &s)
				if s.Error != "" {
					h.logf("[%d/%d] %-27s %5s %-7s P%d: error: %v", n, total, c.Name, mbit(x.rate), x.dir, x.streams, s.Error)
				} else {
					h.logf("[%d/%d] %-27s %5s %-7s P%d: %8.2f Mbit/s  %.3fx  first-s peak %.2fx", n, total, c.Name, mbit(x.rate), x.dir, x.streams, s.Mbps, s.Ratio, s.FirstMax)
				}
				time.Sleep(100 * time.Millisecond) // let the server reset
			}
		}
	}
}

// runLatencyProbe measures RTT through the shaped direction while a
// saturating 4-stream TCP transfer runs the same way: UDP echo probes from
// the sender to the receiver, so each probe waits in the same shaping
// queue as the data (berth classifies only ARP into its own class).
func (h *harness) runLatencyProbe(ctx context.Context, rep *dpReport, cases []*shapeCase) {
	var probes []*latProbe
	for _, r := range h.opts.latRates {
		for _, d := range directions {
			for _, c := range rep.Cases {
				p := &latProbe{Case: c.Name, Kind: c.Kind, RateBps: r, Rate: mbit(r), Dir: d}
				rep.Latency = append(rep.Latency, p)
				probes = append(probes, p)
			}
		}
	}
	byKey := map[string]*latProbe{}
	for _, p := range probes {
		byKey[p.Case+"/"+p.Rate+"/"+p.Dir] = p
	}
	if len(cases) == 0 {
		return
	}
	count := int(h.opts.probe / probeInterval)
	i := 0
	for _, r := range h.opts.latRates {
		for _, d := range directions {
			for k := range cases {
				c := cases[(i+k)%len(cases)]
				if ctx.Err() != nil {
					return
				}
				p := byKey[c.Name+"/"+mbit(r)+"/"+d]
				h.probeOne(ctx, c, p, r, d, count)
				if strings.HasPrefix(p.Error, "load: ") && ctx.Err() == nil {
					// iperf3 occasionally loses its control connection
					// at start; one retry, the first error is kept in the log.
					h.logf("latency %-27s %5s %-7s: %s; retrying once", c.Name, mbit(r), d, p.Error)
					time.Sleep(time.Second)
					*p = latProbe{Case: p.Case, Kind: p.Kind, RateBps: p.RateBps, Rate: p.Rate, Dir: p.Dir}
					h.probeOne(ctx, c, p, r, d, count)
				}
				if ctx.Err() != nil {
					return
				}
				if p.Error != "" {
					h.logf("latency %-27s %5s %-7s: error: %s", c.Name, mbit(r), d, p.Error)
				} else {
					h.logf("latency %-27s %5s %-7s: idle p50 %s ms, loaded p50 %s p99 %s ms, loss %.1f%%, load %.1f Mbit/s",
						c.Name, mbit(r), d, ms(p.IdleP50), ms(p.P50), ms(p.P99), p.LossPct, p.LoadMbps)
				}
				time.Sleep(300 * time.Millisecond)
			}
			i++
		}
	}
}

func (h *harness) probeOne(ctx context.Context, c *shapeCase, p *latProbe, rate uint64, dir string, count int) {
	shaped := c.Shaped[mbit(rate)]
	snd, rcv := endpointsFor(c, shaped, dir)
	port := h.opts.basePort + 1
	if idle, err := udpProbe(ctx, snd.NS, rcv.NS, rcv.IP, port, 20, 20*time.Millisecond, time.Second); err == nil && len(idle.RTTms) > 0 {
		p.IdleP50 = perfnet.FPtr(pct(idle.RTTms, 50))
		p.IdleP99 = perfnet.FPtr(pct(idle.RTTms, 99))
	}
	dur := (loadLead + h.opts.probe + time.Second).Round(time.Second)
	type res struct {
		mbps float64
		iv   []float64
		err  error
	}
	load := make(chan res, 1)
	go func() {
		j, _, err := perfnet.IperfClient{Iperf3: h.opts.iperf3, NS: rcv.NS, ServerIP: snd.IP, Port: h.opts.basePort,
			Streams: 4, Duration: dur, Reverse: true}.Run(ctx)
		if err != nil {
			load <- res{err: err}
			return
		}
		var iv []float64
		for _, x := range j.Intervals {
			iv = append(iv, math.Round(x.Sum.BitsPerSecond/1e4)/100)
		}
		load <- res{mbps: j.End.SumReceived.BitsPerSecond / 1e6, iv: iv}
	}()
	select {
	case <-ctx.Done():
	case <-time.After(loadLead):
	}
	// Echoes still queued when the load stops come back as it drains;
	// wait long enough for a bloated queue (seconds) to empty.
	pr, perr := udpProbe(ctx, snd.NS, rcv.NS, rcv.IP, port, count, probeInterval, 10*time.Second)
	l := <-load
	if ctx.Err() != nil {
		return
	}
	if l.err != nil {
		p.Error = "load: " + l.err.Error()
		return
	}
	p.LoadMbps, p.LoadIntervals = l.mbps, l.iv
	if perr != nil {
		p.Error = perr.Error()
		return
	}
	p.Sent, p.Received, p.RTTms = pr.Sent, pr.Received, pr.RTTms
	if pr.Sent > 0 {
		p.LossPct = 100 * float64(pr.Sent-pr.Received) / float64(pr.Sent)
	}
	p.P50, p.P90, p.P99 = perfnet.FPtr(pct(pr.RTTms, 50)), perfnet.FPtr(pct(pr.RTTms, 90)), perfnet.FPtr(pct(pr.RTTms, 99))
	_, hi := minMax(pr.RTTms)
	p.Max = perfnet.FPtr(hi)
}
