package plugin

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/berthdev/berth/cni/tenant"
)

// netConf is a macvlan network on lo whose tenancy files live in dir.
func netConf(t *testing.T, dir, mode string) []byte {
	t.Helper()
	tenancy := map[string]any{"registry": filepath.Join(dir, "tenants.json"), "mappingFile": filepath.Join(dir, "ns.json")}
	if mode != "" {
		tenancy["registryMode"] = mode
	}
	b, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": "bt-tenant", "type": "berth", "mode": "macvlan", "master": "lo",
		"ipam":    map[string]any{"subnet": "198.18.250.0/24", "dataDir": filepath.Join(dir, "ipam")},
		"tenancy": tenancy,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTenantIndex covers the tenant-index read path of both registry
// modes: "local" assigns on first use, "cluster" only reads what
// berth-netd mirrored and answers code 11 (try again later), naming what is
// missing, until it is there.
func TestTenantIndex(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     string
		registry map[string]uint32 // nil: no registry file
		mapping  map[string]string // nil: no mapping file
		args     string
		want     string
		wantIdx  uint32
		// runtimeConfig as the runtime passes it (berth-cri: the pod's
		// berth.dev/tenant label or annotation as "tenant", and the
		// annotations).
		runtimeConfig map[string]any
		code          uint
		msg           string
		written       bool // the registry file exists afterwards
	}{
		{name: "local assigns on first use", mapping: map[string]string{"dev": "blue"}, args: "K8S_POD_NAMESPACE=dev",
			want: "blue", wantIdx: 1, written: true},
		{name: "cluster reads the mirrored index", mode: "cluster", registry: map[string]uint32{"default": 0, "green": 1, "blue": 2},
			mapping: map[string]string{"dev": "blue"}, args: "K8S_POD_NAMESPACE=dev", want: "blue", wantIdx: 2, written: true},
		{name: "cluster: unlabelled namespace is the default tenant", mode: "cluster", registry: map[string]uint32{"default": 0},
			mapping: map[string]string{"kube-system": "default"}, args: "K8S_POD_NAMESPACE=kube-system", want: "default", wantIdx: 0, written: true},
		{name: "cluster: tenant not mirrored yet", mode: "cluster", registry: map[string]uint32{"default": 0},
			mapping: map[string]string{"dev": "blue"}, args: "K8S_POD_NAMESPACE=dev", code: types.ErrTryAgainLater, msg: `tenant "blue" has no cluster-wide index`, written: true},
		{name: "cluster: no registry yet", mode: "cluster", mapping: map[string]string{"dev": "blue"}, args: "K8S_POD_NAMESPACE=dev",
			code: types.ErrTryAgainLater, msg: `tenant "blue"`},
		{name: "cluster: namespace not mapped yet", mode: "cluster", registry: map[string]uint32{"default": 0, "new": 1},
			mapping: map[string]string{"dev": "blue"}, args: "K8S_POD_NAMESPACE=new", code: types.ErrTryAgainLater, msg: `namespace "new"`, written: true},
		{name: "cluster: a pod naming a tenant in an unmapped namespace waits", mode: "cluster", registry: map[string]uint32{"default": 0},
			mapping: map[string]string{}, args: "K8S_POD_NAMESPACE=dev;BERTH_TENANT=red", code: types.ErrTryAgainLater, msg: `namespace "dev"`, written: true},
		{name: "cluster: a pod label or annotation matching the namespace is accepted", mode: "cluster", registry: map[string]uint32{"default": 0, "alpha": 3, "beta": 4},
			mapping: map[string]string{"tnh-b": "beta"}, args: "K8S_POD_NAMESPACE=tnh-b",
			runtimeConfig: map[string]any{"tenant": "beta", "io.kubernetes.cri.pod-annotations": map[string]string{"berth.dev/tenant": "beta"}},
			want:          "beta", wantIdx: 4, written: true},
		{name: "cluster: an annotation naming another tenant is refused", mode: "cluster", registry: map[string]uint32{"default": 0, "alpha": 3, "beta": 4},
			mapping: map[string]string{"tnh-b": "beta"}, args: "K8S_POD_NAMESPACE=tnh-b",
			runtimeConfig: map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"berth.dev/tenant": "alpha"}},
			code:          ErrCodeTenantMismatch, msg: `the pod asks for tenant "alpha" (annotation berth.dev/tenant) but its namespace "tnh-b" belongs to tenant "beta"`, written: true},
		{name: "cluster: a pod label (runtimeConfig.tenant) naming another tenant is refused", mode: "cluster", registry: map[string]uint32{"default": 0, "alpha": 3, "beta": 4},
			mapping: map[string]string{"tnh-b": "beta"}, args: "K8S_POD_NAMESPACE=tnh-b", runtimeConfig: map[string]any{"tenant": "alpha"},
			code: ErrCodeTenantMismatch, msg: `"alpha" (runtimeConfig.tenant, from the pod's berth.dev/tenant label or annotation)`, written: true},
		{name: "local: the annotation still chooses (standalone nodes)", registry: map[string]uint32{"default": 0, "alpha": 3, "beta": 4},
			mapping: map[string]string{"tnh-b": "beta"}, args: "K8S_POD_NAMESPACE=tnh-b",
			runtimeConfig: map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"berth.dev/tenant": "alpha"}},
			want:          "alpha", wantIdx: 3, written: true},
		{name: "invalid tenant is a config error, not a retry", mode: "cluster", registry: map[string]uint32{"default": 0},
			args: "BERTH_TENANT=Not_Valid", code: types.ErrInvalidNetworkConfig, msg: "not a valid tenant name", written: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.registry != nil {
				b, _ := json.Marshal(map[string]any{"tenants": tc.registry, "next": len(tc.registry)})
				os.WriteFile(filepath.Join(dir, "tenants.json"), b, 0o600)
			}
			if tc.mapping != nil {
				b, _ := json.Marshal(tc.mapping)
				os.WriteFile(filepath.Join(dir, "ns.json"), b, 0o644)
			}
			conf := netConf(t, dir, tc.mode)
			if tc.runtimeConfig != nil {
				var m map[string]any
				json.Unmarshal(conf, &m)
				m["runtimeConfig"] = tc.runtimeConfig
				conf, _ = json.Marshal(m)
			}
			r, closeLog, err := load(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Args: "IgnoreUnknown=1;" + tc.args, StdinData: conf}, "ADD")
			if err != nil {
				t.Fatal(err)
			}
			defer closeLog()
			name, idx, err := r.tenant()
			if tc.code != 0 {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.msg) {
					t.Fatalf("err = %v, want code %d mentioning %q", err, tc.code, tc.msg)
				}
			} else if err != nil || name != tc.want || idx != tc.wantIdx {
				t.Fatalf("tenant() = %q, %d, %v; want %q, %d", name, idx, err, tc.want, tc.wantIdx)
			}
			_, statErr := os.Stat(filepath.Join(dir, "tenants.json"))
			if (statErr == nil) != tc.written {
				t.Errorf("registry exists = %v, want %v", statErr == nil, tc.written)
			}
			if tc.registry != nil && tc.mode == tenant.ModeCluster {
				m, _ := tenant.Registry{Path: filepath.Join(dir, "tenants.json")}.List()
				if len(m) != len(tc.registry) {
					t.Errorf("cluster mode changed the registry: %v", m)
				}
			}
		})
	}
}

// TestAddFailsOnTenantBeforeAddress runs ADD where the tenant cannot be
// settled: a tenant without a cluster-wide index yet must fail with code
// 11, and a pod naming another tenant than its namespace's with code 103
// naming both; either way before taking an address, so the runtime's
// retries cost no allocation. The failure comes before any link is made,
// so the host's namespace is safe to name.
func TestAddFailsOnTenantBeforeAddress(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		code        uint
		msg         []string
	}{
		{name: "tenant not mirrored yet", code: types.ErrTryAgainLater, msg: []string{`"blue"`}},
		{name: "annotation names another tenant", annotations: map[string]string{tenant.AnnotationKey: "green"},
			code: ErrCodeTenantMismatch, msg: []string{`"green"`, `"blue"`, `namespace "dev"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "ns.json"), []byte(`{"dev":"blue"}`), 0o644)
			os.WriteFile(filepath.Join(dir, "tenants.json"), []byte(`{"tenants":{"default":0,"green":1},"next":2}`), 0o600)
			conf := netConf(t, dir, tenant.ModeCluster)
			if tc.annotations != nil {
				var m map[string]any
				json.Unmarshal(conf, &m)
				m["runtimeConfig"] = map[string]any{"io.kubernetes.cri.pod-annotations": tc.annotations}
				conf, _ = json.Marshal(m)
			}
			err := Add(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/proc/self/ns/net",
				Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=dev", StdinData: conf})
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code {
				t.Fatalf("ADD = %v, want code %d", err, tc.code)
			}
			for _, m := range tc.msg {
				if !strings.Contains(te.Msg, m) {
					t.Errorf("message %q does not mention %s", te.Msg, m)
				}
			}
			if entries, _ := os.ReadDir(filepath.Join(dir, "ipam", "bt-tenant")); len(entries) > 0 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("ADD touched the allocator before the tenant: %v", names)
			}
		})
	}
}
