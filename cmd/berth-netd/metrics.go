package main

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berthdev/berth/cni/kube"
	"github.com/berthdev/berth/cni/overlay"
)

// metrics turns overlay.Watcher results into Prometheus metrics and the
// readiness signal. A private registry keeps the exposition to what berth-netd
// owns (plus the standard Go and process collectors) instead of whatever
// libraries register globally.
type metrics struct {
	reg         *prometheus.Registry
	reconciles  *prometheus.CounterVec
	errors      *prometheus.CounterVec
	duration    prometheus.Histogram
	peers       prometheus.Gauge
	changes     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	devices     prometheus.Gauge
	// Written by the dataplane.
	bpfAvailable   prometheus.Gauge
	staleEndpoints prometheus.Counter
	// Written by the Kubernetes syncer's berth_remote loop.
	remoteEntries prometheus.Gauge
	remoteChanges *prometheus.CounterVec
	remoteErrors  prometheus.Counter
	// ready flips once the overlay has been programmed successfully; until
	// then pods on this node cannot reach other nodes.
	ready atomic.Bool
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_netd_reconciles_total",
			Help: "Reconcile attempts by trigger (start, file, resync) and result (success, stale: the peers file or tenant registry was bad and the last good version was applied, skipped: no good peer list yet, error: programming failed).",
		}, []string{"trigger", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_netd_reconcile_errors_total",
			Help: "Reconcile errors by stage: load (peers file unreadable or invalid), registry (tenant registry unreadable) or apply (netlink programming failed).",
		}, []string{"stage"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_netd_reconcile_duration_seconds",
			Help:    "Time taken by one reconcile attempt, including reading the peers file.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms .. ~4s
		}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_netd_peers",
			Help: "Remote peers in the desired state of the last reconcile that got that far.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_netd_entries_changed_total",
			Help: "Routes, neighbour and FDB entries changed by reconciles, by operation (added, removed). Steady growth means something else keeps changing the overlay.",
		}, []string{"op"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_netd_last_success_timestamp_seconds",
			Help: "Unix time of the last reconcile that programmed every device without error.",
		}),
		devices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_netd_tenant_devices",
			Help: "VXLAN devices (one per tenant) in the last reconcile that got that far.",
		}),
		bpfAvailable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_netd_bpf_available",
			Help: "1 if the last reconcile attached the VNI guard to every tenant device and synced the pod CIDR set; 0 if BPF is disabled (--bpf-pin-dir empty) or failed (see the log).",
		}),
		staleEndpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_netd_stale_endpoints_removed_total",
			Help: "BPF endpoints of this node's pod CIDR removed because no IPAM allocation holds their address any more.",
		}),
		remoteEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_netd_remote_endpoints",
			Help: "Entries in berth_remote after the last successful sync: the addresses of other nodes' pods, plus one per flat network subnet (--kubernetes only).",
		}),
		remoteChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_netd_remote_endpoint_changes_total",
			Help: "berth_remote entries changed by syncs, by operation (added, changed, removed).",
		}, []string{"op"}),
		remoteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_netd_remote_sync_errors_total",
			Help: "Failed syncs of berth_remote (retried; see the log).",
		}),
	}
	m.reg.MustRegister(m.reconciles, m.errors, m.duration, m.peers, m.changes, m.lastSuccess,
		m.devices, m.bpfAvailable, m.staleEndpoints, m.remoteEntries, m.remoteChanges, m.remoteErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Pre-create the label values a dashboard alerts on, so that "no
	// errors yet" reads as 0 rather than as a missing series.
	for _, stage := range []string{"load", "registry", "apply"} {
		m.errors.WithLabelValues(stage)
	}
	for _, op := range []string{"added", "removed"} {
		m.changes.WithLabelValues(op)
	}
	for _, op := range []string{"added", "changed", "removed"} {
		m.remoteChanges.WithLabelValues(op)
	}
	return m
}

// observe records one reconcile attempt.
func (m *metrics) observe(r overlay.Result) {
	m.duration.Observe(r.Duration.Seconds())
	if r.LoadErr != nil {
		m.errors.WithLabelValues("load").Inc()
	}
	if r.RegistryErr != nil {
		m.errors.WithLabelValues("registry").Inc()
	}
	result := "success"
	switch {
	case r.Skipped:
		result = "skipped"
	case r.Err != nil:
		result = "error"
		m.errors.WithLabelValues("apply").Inc()
	case r.Stale:
		result = "stale"
	}
	m.reconciles.WithLabelValues(string(r.Trigger), result).Inc()
	if r.Skipped {
		return
	}
	m.peers.Set(float64(r.Stats.Peers))
	m.devices.Set(float64(len(r.Devices)))
	m.changes.WithLabelValues("added").Add(float64(r.Stats.Added))
	m.changes.WithLabelValues("removed").Add(float64(r.Stats.Removed))
	if r.Err == nil {
		m.lastSuccess.SetToCurrentTime()
		m.ready.Store(true)
	}
}

// observeRemote records one sync of berth_remote.
func (m *metrics) observeRemote(st kube.RemoteStats, err error) {
	m.remoteChanges.WithLabelValues("added").Add(float64(st.Added))
	m.remoteChanges.WithLabelValues("changed").Add(float64(st.Changed))
	m.remoteChanges.WithLabelValues("removed").Add(float64(st.Removed))
	if err != nil {
		m.remoteErrors.Inc()
		return
	}
	m.remoteEntries.Set(float64(st.Entries))
}

// register adds a collector to the private registry.
func (m *metrics) register(c prometheus.Collector) error { return m.reg.Register(c) }

// handler serves /metrics, /healthz (liveness: the process is serving) and
// /readyz (the overlay has been programmed at least once). Liveness does not
// depend on the peers file: restarting the agent cannot fix a bad file, and
// the last good state keeps being applied anyway.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "overlay not programmed yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
