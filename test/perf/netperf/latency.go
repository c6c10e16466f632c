package main

import (
	"context"
	"fmt"
	"time"

	"github.com/berthdev/berth/test/perf/report"
)

// latencyResult is ADD/DEL wall time for one plugin.
type latencyResult struct {
	Plugin     string    `json:"plugin"`
	Desc       string    `json:"description"`
	Status     string    `json:"status"` // ok, failed, skipped
	Error      string    `json:"error,omitempty"`
	Calls      int       `json:"calls"`
	AddMs      []float64 `json:"addMs"`
	DelMs      []float64 `json:"delMs"`
	AddP50     *float64  `json:"addP50Ms"`
	AddP99     *float64  `json:"addP99Ms"`
	DelP50     *float64  `json:"delP50Ms"`
	DelP99     *float64  `json:"delP99Ms"`
	AddErrors  int       `json:"addErrors"`
	DelErrors  int       `json:"delErrors"`
	FirstError []string  `json:"errors,omitempty"` // first few, for the report
}

func (r *latencyResult) fail(err error) {
	r.Status = "failed"
	r.Error = err.Error()
}

func (r *latencyResult) note(err error) {
	if len(r.FirstError) < 5 {
		r.FirstError = append(r.FirstError, tail(err.Error(), 500))
	}
}

func (r *latencyResult) summarize() {
	p := func(xs []float64, q float64) *float64 {
		if len(xs) == 0 {
			return nil
		}
		v := report.Percentile(xs, q)
		return &v
	}
	r.AddP50, r.AddP99 = p(r.AddMs, 50), p(r.AddMs, 99)
	r.DelP50, r.DelP99 = p(r.DelMs, 50), p(r.DelMs, 99)
	if r.Status == "" {
		r.Status = "ok"
		if len(r.AddMs) == 0 || len(r.DelMs) == 0 {
			r.Status = "failed"
			if r.Error == "" && len(r.FirstError) > 0 {
				r.Error = r.FirstError[0]
			}
		}
	}
}

// latSide is one plugin's half of the benchmark.
type latSide struct {
	res    *latencyResult
	p      plugin
	node   string
	conf   []byte
	pods   []string
	ids    []string
	result [][]byte // ADD results, for DEL's prevResult
	ok     []bool
	fails  int // consecutive failures; 10 in a row gives up on that side
}

// runLatency times n sequential ADDs, then n DELs, for the reference
// macvlan+host-local and berth macvlan, alternating the two call by call
// (ref,berth,berth,ref,...) so drift hits both the same. Every pod netns is
// made before timing starts; only the plugin's fork-to-exit is timed.
// ADD i therefore runs with i pods already on the node, as on a filling
// node; DEL empties it again in the same order.
func (h *harness) runLatency(ctx context.Context, n int) []*latencyResult {
	ref := &latencyResult{Plugin: "ref", Desc: "reference macvlan (bridge) + host-local, CNI " + refCNIVersion, Calls: n}
	brt := &latencyResult{Plugin: "berth", Desc: "berth-cni mode macvlan (bridge), CNI " + berthVersion, Calls: n}
	results := []*latencyResult{ref, brt}

	var sides []*latSide
	setup := func(r *latencyResult, p plugin, tag string, mkConf func(dir string) []byte) {
		node := "bperf-lat-" + tag + "-node"
		if err := macvlanNode(ctx, h, node); err != nil {
			r.fail(err)
			return
		}
		dir, err := h.env.TempDir("bperf-lat-" + tag + "-")
		if err != nil {
			r.fail(err)
			return
		}
		s := &latSide{res: r, p: p, node: node, conf: mkConf(dir)}
		h.logf("cni-latency: creating %d pod namespaces for %s (untimed)", n, tag)
		for i := 0; i < n; i++ {
			pod := fmt.Sprintf("bperf-lat-%s-%03d", tag, i)
			if err := h.env.AddNetns(ctx, pod, true); err != nil {
				r.fail(err)
				return
			}
			s.pods = append(s.pods, pod)
			s.ids = append(s.ids, containerID())
		}
		s.result = make([][]byte, n)
		s.ok = make([]bool, n)
		sides = append(sides, s)
	}
	setup(ref, h.refPlugin("macvlan"), "ref", func(dir string) []byte {
		return mustJSON(map[string]any{
			"cniVersion": refCNIVersion, "name": "bperf-lat-ref", "type": "macvlan",
			"master": "bpm0", "mode": "bridge", "ipam": hostLocal(latRefSub, dir),
		})
	})
	if err := h.berthAvailable(); err != nil {
		brt.Status, brt.Error = "skipped", err.Error()
	} else {
		setup(brt, h.berth, "berth", func(dir string) []byte { return berthMacvlanConf("bperf-lat-berth", latBerthSub, dir) })
	}
	if len(sides) == 0 {
		for _, r := range results {
			r.summarize()
		}
		return results
	}

	call := func(s *latSide, i int, verb string) {
		if s.res.Status != "" || ctx.Err() != nil {
			return
		}
		conf := s.conf
		if verb == "DEL" {
			conf = withPrevResult(s.conf, s.result[i])
		}
		c := cniCall{Command: verb, ContainerID: s.ids[i], Netns: nsPath(s.pods[i]), IfName: "eth0", Conf: conf}
		out, d, err := s.p.ExecIn(ctx, s.node, c)
		if err != nil {
			if verb == "ADD" {
				s.res.AddErrors++
			} else {
				s.res.DelErrors++
			}
			s.res.note(fmt.Errorf("%s #%d: %w", verb, i, err))
			s.fails++
			if s.fails >= 10 {
				s.res.fail(fmt.Errorf("gave up after 10 consecutive errors; first: %s", s.res.FirstError[0]))
			}
			return
		}
		s.fails = 0
		ms := float64(d.Microseconds()) / 1000
		if verb == "ADD" {
			if _, err := firstIP(out); err != nil {
				s.res.AddErrors++
				s.res.note(fmt.Errorf("ADD #%d: %w", i, err))
				return
			}
			s.result[i] = append([]byte(nil), out...)
			s.ok[i] = true
			s.res.AddMs = append(s.res.AddMs, ms)
		} else if s.ok[i] {
			s.res.DelMs = append(s.res.DelMs, ms)
		}
	}
	// Sides that are still set up get DELs at cleanup if the run is cut
	// short; the pods' namespaces go away with cleanup anyway.
	for _, s := range sides {
		s := s
		h.env.OnCleanup(func(ctx context.Context) {
			for i := range s.pods {
				if s.ok[i] {
					_, _, _ = s.p.ExecIn(ctx, s.node, cniCall{Command: "DEL", ContainerID: s.ids[i], Netns: nsPath(s.pods[i]), IfName: "eth0", Conf: withPrevResult(s.conf, s.result[i])})
				}
			}
		})
	}
	for _, verb := range []string{"ADD", "DEL"} {
		h.logf("cni-latency: %d x %s (%d plugins interleaved)", n, verb, len(sides))
		start := time.Now()
		for i := 0; i < n && ctx.Err() == nil; i++ {
			if i%2 == 0 {
				for _, s := range sides {
					call(s, i, verb)
				}
			} else {
				for k := len(sides) - 1; k >= 0; k-- {
					call(sides[k], i, verb)
				}
			}
		}
		h.logf("cni-latency: %s phase took %s", verb, time.Since(start).Round(time.Millisecond))
		if verb == "DEL" {
			for _, s := range sides {
				for i := range s.ok {
					s.ok[i] = false // deleted: nothing left for cleanup to DEL
				}
			}
		}
	}
	if ctx.Err() != nil {
		for _, r := range results {
			if r.Status == "" {
				r.fail(fmt.Errorf("interrupted: %v", ctx.Err()))
			}
		}
	}
	for _, r := range results {
		r.summarize()
	}
	return results
}
