package driver

import (
	"github.com/prometheus/client_golang/prometheus"
)

// volumeMetrics reports each staged volume's usage and I/O at scrape time,
// straight from its quota and counters.
type volumeMetrics struct {
	d                                           *Driver
	used, capacity, inodes, maxInodes, read, wr *prometheus.Desc
	staged, unenforced, recoveries              *prometheus.Desc
}

func newVolumeMetrics(reg prometheus.Registerer, d *Driver) *volumeMetrics {
	l := []string{"volume"}
	m := &volumeMetrics{
		d:          d,
		used:       prometheus.NewDesc("berth_csi_volume_used_bytes", "Bytes a volume counts against its quota.", l, nil),
		capacity:   prometheus.NewDesc("berth_csi_volume_capacity_bytes", "A volume's byte limit.", l, nil),
		inodes:     prometheus.NewDesc("berth_csi_volume_inodes_used", "Inodes a volume uses.", l, nil),
		maxInodes:  prometheus.NewDesc("berth_csi_volume_inodes_capacity", "A volume's inode limit.", l, nil),
		read:       prometheus.NewDesc("berth_csi_volume_read_bytes_total", "Bytes read through the FUSE server (passthrough reads bypass it).", l, nil),
		wr:         prometheus.NewDesc("berth_csi_volume_written_bytes_total", "Bytes written through the FUSE server.", l, nil),
		unenforced: prometheus.NewDesc("berth_csi_volume_unenforced_writers_total", "Write opens that had to join passthrough readers, booked at close instead of checked at write.", l, nil),
		recoveries: prometheus.NewDesc("berth_csi_volume_takeover_walks_total", "Backing-tree walks to find node IDs of an earlier process.", l, nil),
		staged:     prometheus.NewDesc("berth_csi_volumes_staged", "Volumes this node plugin serves.", nil, nil),
	}
	if reg != nil {
		reg.MustRegister(m)
	}
	return m
}

func (m *volumeMetrics) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(m, ch) }

func (m *volumeMetrics) Collect(ch chan<- prometheus.Metric) {
	m.d.mu.Lock()
	vols := make([]*stagedVolume, 0, len(m.d.staged))
	for _, sv := range m.d.staged {
		vols = append(vols, sv)
	}
	m.d.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.staged, prometheus.GaugeValue, float64(len(vols)))
	for _, sv := range vols {
		id := sv.rec.VolumeID
		used, capacity, inodes, maxInodes := sv.fs.Quota().Usage()
		st := sv.fs.Stats()
		ch <- prometheus.MustNewConstMetric(m.used, prometheus.GaugeValue, float64(used), id)
		ch <- prometheus.MustNewConstMetric(m.capacity, prometheus.GaugeValue, float64(capacity), id)
		ch <- prometheus.MustNewConstMetric(m.inodes, prometheus.GaugeValue, float64(inodes), id)
		ch <- prometheus.MustNewConstMetric(m.maxInodes, prometheus.GaugeValue, float64(maxInodes), id)
		ch <- prometheus.MustNewConstMetric(m.read, prometheus.CounterValue, float64(st.BytesRead), id)
		ch <- prometheus.MustNewConstMetric(m.wr, prometheus.CounterValue, float64(st.BytesWritten), id)
		ch <- prometheus.MustNewConstMetric(m.unenforced, prometheus.CounterValue, float64(st.UnenforcedWriters), id)
		ch <- prometheus.MustNewConstMetric(m.recoveries, prometheus.CounterValue, float64(st.Recoveries), id)
	}
}
