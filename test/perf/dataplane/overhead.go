package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/berthdev/berth/test/perf/perfnet"
)

// runOverhead measures what the tenant-isolation programs cost an unshaped
// pod: two berth macvlan pods on one node with tenancy on (the programs
// attached to both pod interfaces) against the same with tenancy off (no
// BPF at all), iperf3 TCP pod to pod, interleaved sample by sample.
func (h *harness) runOverhead(ctx context.Context) []*tputCase {
	cases := []*tputCase{
		{Name: "berth-macvlan-dataplane", Desc: "berth macvlan (bridge), tenancy on: isolation programs on both pods, no bandwidth", tag: "oh-on", tenancy: true},
		{Name: "berth-macvlan-plain", Desc: "berth macvlan (bridge), tenancy off: no eBPF programs", tag: "oh-off"},
	}
	var active []*tputCase
	for _, c := range cases {
		for _, st := range h.opts.streams {
			c.Streams = append(c.Streams, &tputCell{Streams: st})
		}
		if err := h.berthErr; err != nil {
			c.Status, c.Error = "skipped", err.Error()
			continue
		}
		if ctx.Err() != nil {
			c.Status, c.Error = "failed", "interrupted"
			continue
		}
		h.logf("setup overhead %s", c.Name)
		if err := h.setupTput(ctx, c); err != nil {
			c.Status, c.Error = "failed", err.Error()
			h.logf("  %s failed: %v", c.Name, err)
			continue
		}
		c.Status = "ok"
		active = append(active, c)
	}
	total := h.opts.repeats * len(h.opts.streams) * len(active)
	n := 0
	for r := 0; r < h.opts.repeats && len(active) > 0; r++ {
		for si, st := range h.opts.streams {
			rot := (r*len(h.opts.streams) + si) % len(active)
			for k := range active {
				c := active[(rot+k)%len(active)]
				if ctx.Err() != nil {
					return cases
				}
				n++
				s, err := perfnet.RunIperfClient(ctx, h.opts.iperf3, c.client.NS, c.server.IP, h.opts.basePort, st, h.opts.duration)
				if ctx.Err() != nil {
					return cases
				}
				s.Repeat, s.Order = r+1, n
				cell := c.Streams[si]
				if err != nil {
					s.Error = err.Error()
					cell.Errors++
					h.logf("[%d/%d] overhead %-24s P%d: error: %v", n, total, c.Name, st, err)
				} else {
					h.logf("[%d/%d] overhead %-24s P%d: %6.2f Gbit/s (retr %d)", n, total, c.Name, st, s.Gbps, s.Retransmits)
				}
				cell.Samples = append(cell.Samples, s)
				time.Sleep(300 * time.Millisecond)
			}
		}
	}
	return cases
}

func (h *harness) setupTput(ctx context.Context, c *tputCase) error {
	node := nsPrefix + c.tag + "-node"
	if err := h.berthNode(ctx, node, "macvlan", ""); err != nil {
		return err
	}
	dataDir, err := h.stateDir("ipam-" + c.tag)
	if err != nil {
		return err
	}
	n, err := h.berthNetwork(node, nsPrefix+c.tag, h.berthPlugin("macvlan", subnet[c.tag], dataDir, c.tenancy))
	if err != nil {
		return err
	}
	var pods []*pod
	for i := 1; i <= 2; i++ {
		ns := fmt.Sprintf("%s%s-p%d", nsPrefix, c.tag, i)
		if err := h.env.AddNetns(ctx, ns, false); err != nil {
			return err
		}
		p, _, err := n.add(ctx, ns, nil)
		if err != nil {
			return err
		}
		pods = append(pods, p)
	}
	c.server, c.client = pods[0], pods[1]
	c.PodMTU = perfnet.LinkMTU(ctx, c.server.NS, "eth0")
	c.Programs = tcxSummary(ctx, c.server.NS)
	if _, err := h.env.StartIperfServer(ctx, h.opts.iperf3, c.server.NS, h.opts.basePort, h.logDir); err != nil {
		return err
	}
	if _, err := perfnet.RunIperfClient(ctx, h.opts.iperf3, c.client.NS, c.server.IP, h.opts.basePort, 1, time.Second); err != nil {
		return fmt.Errorf("warm-up iperf3 run failed: %w", err)
	}
	return nil
}

// tcxSummary lists the BPF programs attached to a pod's eth0, for the
// report to show what "dataplane on" means (bpftool is optional).
func tcxSummary(ctx context.Context, ns string) string {
	if _, err := exec.LookPath("bpftool"); err != nil {
		return "(bpftool not installed: attachments not listed)"
	}
	out, err := perfnet.NSExec(ctx, ns, "bpftool", "net", "show", "dev", "eth0")
	if err != nil {
		return err.Error()
	}
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasSuffix(l, ":") {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return "none"
	}
	return strings.Join(keep, "; ")
}
