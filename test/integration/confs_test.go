package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// netConf builds a berth configuration; extra keys override the defaults.
func netConf(t *testing.T, version, name, mode, master, subnet string, extra map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"cniVersion": version,
		"name":       name,
		"type":       "berth",
		"mode":       mode,
		"master":     master,
		"ipam": map[string]any{
			"subnet":  subnet,
			"dataDir": t.TempDir(),
		},
		// Private dataplane state: tests never touch the node's maps.
		"bpfPinDir": testPinDir(t),
		"tenancy":   map[string]any{"registry": filepath.Join(t.TempDir(), "tenants.json")},
	}
	for k, v := range extra {
		m[k] = v
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dataDirOf returns the ipam.dataDir of conf.
func dataDirOf(t *testing.T, conf []byte) string {
	t.Helper()
	var c struct {
		IPAM struct {
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(conf, &c); err != nil {
		t.Fatal(err)
	}
	return c.IPAM.DataDir
}

// testPinDir is a per-test BPF pin directory, removed afterwards.
func testPinDir(t *testing.T) string {
	t.Helper()
	dir := "/sys/fs/bpf/bti" + randHex(4)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
