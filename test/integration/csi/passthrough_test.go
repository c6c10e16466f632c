package csi_test

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berthdev/berth/test/csienv"
)

// metric returns the sum of a metric's samples on the plugin's /metrics.
func metric(t *testing.T, p *csienv.Plugin, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// TestPassthroughReads checks the read path: with passthrough, read-only
// opens are served by the kernel from the backing file, so the server sees
// no READ; without it (--passthrough=false) every byte goes through it.
// Writes always go through the server, which is what holds them to quota.
func TestPassthroughReads(t *testing.T) {
	for _, tc := range []struct {
		name        string
		flag        string
		passthrough bool
	}{
		{"passthrough", "--passthrough=true", true},
		{"no-passthrough", "--passthrough=false", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := csienv.Start(t, tc.flag)
			_, dir := p.Volume("pt", 64*1024*1024)
			data := make([]byte, 8<<20)
			if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			written := metric(t, p, "berth_csi_volume_written_bytes_total")
			if written < float64(len(data)) {
				t.Errorf("server saw %v bytes written, want ≥ %d: writes must pass the quota", written, len(data))
			}
			if _, err := os.ReadFile(filepath.Join(dir, "f")); err != nil {
				t.Fatal(err)
			}
			read := metric(t, p, "berth_csi_volume_read_bytes_total")
			switch {
			case tc.passthrough && read > 0:
				if strings.Contains(p.Log(), "FUSE passthrough unavailable") {
					t.Skipf("kernel refused FUSE passthrough: %v bytes read through the server", read)
				}
				t.Errorf("with passthrough the server served %v bytes of reads, want 0", read)
			case !tc.passthrough && read < float64(len(data)):
				t.Errorf("without passthrough the server served %v bytes of reads, want ≥ %d", read, len(data))
			}
			t.Logf("server: %v bytes written, %v bytes read", written, read)
		})
	}
}
