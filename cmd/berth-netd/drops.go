package main

import (
	"log/slog"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdev/berth/cni/overlay"
	"github.com/berthdev/berth/cni/tenant"
	bebpf "github.com/berthdev/berth/ebpf"
)

// dropsCollector exposes the BPF drop counters as
// berth_tenant_dropped_packets_total{tenant,reason}. It reads the map at
// scrape time instead of mirroring it into a CounterVec: the counters live in
// the kernel, are written by every pod's programs and survive berth-netd
// restarts, so the map is the only source of truth.
type dropsCollector struct {
	desc     *prometheus.Desc
	maps     func() bpfMaps // nil result: BPF unavailable, no series
	registry string         // tenant registry for id -> name; "" => only "default"
	log      *slog.Logger
}

func newDropsCollector(maps func() bpfMaps, registry string, log *slog.Logger) *dropsCollector {
	return &dropsCollector{
		desc: prometheus.NewDesc("berth_tenant_dropped_packets_total",
			"Packets dropped by berth's tenant isolation programs on this node, by the tenant whose program dropped them and the reason (cross_tenant, spoofed_source, foreign_vni).",
			[]string{"tenant", "reason"}, nil),
		maps:     maps,
		registry: registry,
		log:      log,
	}
}

func (c *dropsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *dropsCollector) Collect(ch chan<- prometheus.Metric) {
	maps := c.maps()
	if maps == nil {
		return
	}
	counts, err := maps.DropCounts()
	if err != nil {
		// An invalid metric fails the scrape with the reason, which is
		// more honest than silently showing no drops.
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	if len(counts) == 0 {
		return
	}
	names := c.tenantNames()
	// Two ids can end up with one label set (an unknown id shown as the
	// number and a tenant of that name), and duplicate series fail the
	// whole scrape, so sum by label set first.
	type labels struct{ tenant, reason string }
	sums := map[labels]uint64{}
	for k, v := range counts {
		name, ok := names[k.Tenant]
		if !ok {
			name = strconv.FormatUint(uint64(k.Tenant), 10)
		}
		sums[labels{name, bebpf.DropReasonName(k.Reason)}] += v
	}
	for l, v := range sums {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), l.tenant, l.reason)
	}
}

// tenantNames maps BPF tenant ids to names. A registry that cannot be read
// costs only the names, not the counts.
func (c *dropsCollector) tenantNames() map[uint32]string {
	tenants := []overlay.Tenant{{Name: tenant.Default}}
	if c.registry != "" {
		t, err := overlay.LoadTenants(c.registry)
		if err != nil {
			c.log.Warn("cannot read the tenant registry; drop counters are labelled with tenant ids", "err", err)
		} else {
			tenants = t
		}
	}
	out := make(map[uint32]string, len(tenants))
	for _, t := range tenants {
		out[bpfTenantID(t.Index)] = t.Name
	}
	return out
}
