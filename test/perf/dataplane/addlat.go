package main

import (
	"context"
	"fmt"
	"time"
)

// addLatBandwidth is the shaping every "with bandwidth" ADD asks for.
const addLatBandwidth = 100e6

// runAddLatency times n sequential ADDs, then n DELs, per configuration,
// all through libcni as a runtime calls them (the timed span is
// AddNetworkList / DelNetworkList: every plugin of the chain plus the
// library's result cache). Configurations alternate call by call, the
// order reversing every call, so drift hits all of them alike. Every pod
// netns exists before timing starts; ADD i runs with i pods on its node.
// The berth configurations use vxlan mode (routed veth pods) so that
// their link work matches the reference ptp chain's.
func (h *harness) runAddLatency(ctx context.Context) []*addVariant {
	bw := &bandwidth{IngressRate: addLatBandwidth, EgressRate: addLatBandwidth}
	refBurst := burstFor(addLatBandwidth)
	vs := []*addVariant{
		{Name: "berth-dataplane", Desc: "berth vxlan mode (routed veth), tenancy on: isolation programs attached, no bandwidth", tag: "add-dp", tenancy: true, berth: true},
		{Name: "berth-bandwidth", Desc: "berth vxlan mode, tenancy on, bandwidth capability 100 Mbit/s both directions (default burst): isolation + HTB, ifb and shaping programs", tag: "add-bw", tenancy: true, berth: true, bw: bw},
		{Name: "berth-plain", Desc: "berth vxlan mode, tenancy off, no bandwidth: no eBPF dataplane at all", tag: "add-plain", berth: true},
		{Name: "ref-ptp-bandwidth", Desc: "reference ptp + host-local + bandwidth chain, bandwidth capability 100 Mbit/s both directions (burst as ref-bandwidth-veth)", tag: "add-ref",
			bw: &bandwidth{IngressRate: addLatBandwidth, EgressRate: addLatBandwidth, IngressBurst: refBurst, EgressBurst: refBurst}},
	}
	n := h.opts.cniCalls
	var active []*addVariant
	for _, v := range vs {
		v.Calls = n
		if v.berth && h.berthErr != nil {
			v.Status, v.Error = "skipped", h.berthErr.Error()
			continue
		}
		if err := h.setupAddVariant(ctx, v, n); err != nil {
			v.fail(err)
			continue
		}
		active = append(active, v)
	}
	call := func(v *addVariant, i int, verb string) {
		if v.Status != "" || ctx.Err() != nil {
			return
		}
		var d time.Duration
		var err error
		if verb == "ADD" {
			var p *pod
			p, d, err = v.net.add(ctx, v.pods[i], v.bw)
			if err == nil {
				v.added[i] = p
			}
		} else if p := v.added[i]; p != nil {
			d, err = v.net.del(ctx, p)
		} else {
			return
		}
		if err != nil {
			if verb == "ADD" {
				v.AddErrors++
			} else {
				v.DelErrors++
			}
			v.note(fmt.Errorf("%s #%d: %w", verb, i, err))
			v.fails++
			if v.fails >= 10 {
				v.fail(fmt.Errorf("gave up after 10 consecutive errors; first: %s", v.FirstErrors[0]))
			}
			return
		}
		v.fails = 0
		msv := float64(d.Microseconds()) / 1000
		if verb == "ADD" {
			v.AddMs = append(v.AddMs, msv)
		} else {
			v.DelMs = append(v.DelMs, msv)
		}
	}
	for _, verb := range []string{"ADD", "DEL"} {
		if len(active) == 0 {
			break
		}
		h.logf("add-latency: %d x %s (%d configurations interleaved)", n, verb, len(active))
		start := time.Now()
		for i := 0; i < n && ctx.Err() == nil; i++ {
			for k := range active {
				j := k
				if i%2 == 1 {
					j = len(active) - 1 - k
				}
				call(active[j], i, verb)
			}
		}
		h.logf("add-latency: %s phase took %s", verb, time.Since(start).Round(time.Millisecond))
	}
	if ctx.Err() != nil {
		for _, v := range vs {
			if v.Status == "" {
				v.fail(fmt.Errorf("interrupted: %v", ctx.Err()))
			}
		}
	}
	for _, v := range vs {
		v.summarize()
	}
	return vs
}

func (h *harness) setupAddVariant(ctx context.Context, v *addVariant, n int) error {
	node := nsPrefix + v.tag + "-node"
	var err error
	if v.berth {
		if err := h.berthNode(ctx, node, "vxlan", subnet["underlay-ad"]); err != nil {
			return err
		}
		dataDir, err := h.stateDir("ipam-" + v.tag)
		if err != nil {
			return err
		}
		v.net, err = h.berthNetwork(node, nsPrefix+v.tag, h.berthPlugin("vxlan", subnet[v.tag], dataDir, v.tenancy))
		if err != nil {
			return err
		}
	} else {
		if err := h.addNode(ctx, node); err != nil {
			return err
		}
		if v.net, err = h.refNetwork(node, nsPrefix+v.tag, subnet[v.tag]); err != nil {
			return err
		}
	}
	h.logf("add-latency: creating %d pod namespaces for %s (untimed)", n, v.Name)
	for i := 0; i < n; i++ {
		pod := fmt.Sprintf("%s%s-%03d", nsPrefix, v.tag, i)
		if err := h.env.AddNetns(ctx, pod, true); err != nil {
			return err
		}
		v.pods = append(v.pods, pod)
	}
	v.added = make([]*pod, n)
	return nil
}
