package overlay

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fsnotify/fsnotify"

	"github.com/berthdev/berth/cni/tenant"
)

func TestTenantHelpers(t *testing.T) {
	base := Device{
		VNI: 99, Port: 4790, LocalIP: netip.MustParseAddr("198.18.0.1"),
		PodCIDR: netip.MustParsePrefix("198.18.64.0/24"), MTU: 1400, LockDir: "/run/x", Table: 7,
	}
	for _, tc := range []struct {
		name      string
		vniBase   uint32
		index     uint32
		wantVNI   uint32
		wantTable int
		wantName  string
	}{
		{"default tenant keeps the base VNI and the main table", 1, 0, 1, 0, "berth.1"},
		{"first named tenant", 1, 1, 2, 10001, "berth.2"},
		{"other base", 100, 3, 103, 10003, "berth.103"},
		{"last tenant index", 1, tenant.MaxTenants - 1, tenant.MaxTenants, TableBase + tenant.MaxTenants - 1, "berth.4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := VNIFor(tc.vniBase, tc.index); got != tc.wantVNI {
				t.Errorf("VNIFor(%d, %d) = %d, want %d", tc.vniBase, tc.index, got, tc.wantVNI)
			}
			if got := TableFor(tc.index); got != tc.wantTable {
				t.Errorf("TableFor(%d) = %d, want %d", tc.index, got, tc.wantTable)
			}
			d := TenantDevice(base, tc.vniBase, tc.index)
			want := base
			want.VNI, want.Table = tc.wantVNI, tc.wantTable
			if d != want {
				t.Errorf("TenantDevice = %+v, want %+v", d, want)
			}
			if d.Name() != tc.wantName {
				t.Errorf("Name() = %s, want %s", d.Name(), tc.wantName)
			}
			if err := d.validate(); err != nil {
				t.Errorf("validate: %v", err)
			}
		})
	}
	if base.VNI != 99 || base.Table != 7 {
		t.Errorf("TenantDevice modified its argument: %+v", base)
	}
}

func TestDeviceTableValidation(t *testing.T) {
	for _, tc := range []struct {
		table     int
		wantKern  int    // kernel table ID used for the routes
		wantError string // "" => valid
	}{
		{0, 254, ""},
		{254, 254, ""},
		{1, 1, ""},
		{10001, 10001, ""},
		{1<<32 - 1, 1<<32 - 1, ""},
		{-1, 0, "out of range"},
		{1 << 32, 0, "out of range"},
		{255, 0, "reserved"},
		{253, 0, "reserved"},
	} {
		d := Device{VNI: 1, LocalIP: netip.MustParseAddr("198.18.0.1"), Table: tc.table}
		err := d.validate()
		if tc.wantError == "" {
			if err != nil {
				t.Errorf("table %d: %v", tc.table, err)
			} else if got := d.table(); got != tc.wantKern {
				t.Errorf("table %d: kernel table %d, want %d", tc.table, got, tc.wantKern)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantError) {
			t.Errorf("table %d: err = %v, want %q", tc.table, err, tc.wantError)
		}
	}
}

func TestLoadTenants(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string // "" => no file
		want    []Tenant
		wantErr string
	}{
		{name: "missing file is the default tenant", want: []Tenant{{"default", 0}}},
		{name: "empty registry", file: `{"tenants":{},"next":0}`, want: []Tenant{{"default", 0}}},
		{name: "registered tenants by index", file: `{"tenants":{"default":0,"zeta":1,"alpha":2},"next":3}`,
			want: []Tenant{{"default", 0}, {"zeta", 1}, {"alpha", 2}}},
		{name: "default not registered", file: `{"tenants":{"team-a":1},"next":2}`,
			want: []Tenant{{"default", 0}, {"team-a", 1}}},
		{name: "old registry gave index 0 to a named tenant", file: `{"tenants":{"first":0,"default":1},"next":2}`,
			want: []Tenant{{"first", 0}, {"default", 1}}},
		{name: "duplicate index: the default tenant wins index 0", file: `{"tenants":{"aaa":0,"default":0,"b":1,"a":1},"next":2}`,
			want: []Tenant{{"default", 0}, {"a", 1}}},
		{name: "corrupt", file: `{"tenants":`, wantErr: "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tenants.json")
			if tc.file != "" {
				if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := LoadTenants(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("LoadTenants = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRelevantEvent(t *testing.T) {
	files := []watchedFile{
		{path: "/etc/berth/peers.json", configMap: true},
		{path: "/var/lib/berth/tenants.json"},
	}
	for _, tc := range []struct {
		name string
		op   fsnotify.Op
		want bool
	}{
		{"/etc/berth/peers.json", fsnotify.Create, true},
		{"/etc/berth/peers.json", fsnotify.Write, true},
		{"/etc/berth/peers.json", fsnotify.Chmod, false},
		{"/etc/berth/..data", fsnotify.Create, true},
		{"/etc/berth/other.json", fsnotify.Write, false},
		{"/var/lib/berth/tenants.json", fsnotify.Create, true},
		{"/var/lib/berth/tenants.json", fsnotify.Remove, true},
		{"/var/lib/berth/tenants.json.lock", fsnotify.Create, false},
		{"/var/lib/berth/.tmp-tenants.json-123", fsnotify.Write, false},
		{"/var/lib/berth/..data", fsnotify.Create, false}, // no ConfigMap there
		{"/var/lib/berth/peers.json", fsnotify.Create, false},
		{"/etc/berth/tenants.json", fsnotify.Create, false},
	} {
		if got := relevantEvent(fsnotify.Event{Name: tc.name, Op: tc.op}, files); got != tc.want {
			t.Errorf("relevantEvent(%s %s) = %t, want %t", tc.op, tc.name, got, tc.want)
		}
	}
}

// waitVNI matches the reconcile of the device with the given VNI and table.
func waitVNI(vni uint32, table int) func(call) bool {
	return func(c call) bool { return c.vni == vni && c.table == table }
}

func TestWatcherFollowsTenantRegistry(t *testing.T) {
	dir := t.TempDir()
	peers := filepath.Join(dir, "peers.json")
	writeAtomic(t, peers, peersJSON(t, p1, p2))
	// The registry lives in a directory that does not exist yet: the
	// Watcher must create it to watch it.
	regPath := filepath.Join(dir, "state", "tenants.json")
	fw := startFakeWatcher(t, peers, -1, func(w *Watcher) {
		w.TenantRegistry = regPath
		w.VNIBase = 100
	})

	r := fw.next(t)
	if !r.OK() || len(r.Devices) != 1 || r.Devices[0].Device.VNI != 100 || r.Devices[0].Tenant != (Tenant{"default", 0}) {
		t.Fatalf("start without a registry = %+v, want the default tenant's device only", r)
	}
	if r.PodCIDR != netip.MustParsePrefix(p1.PodCIDR) || len(r.Peers) != 2 {
		t.Errorf("result peers %v / pod CIDR %s, want the file's and n1's", r.Peers, r.PodCIDR)
	}
	fw.waitCall(t, "the default tenant's device", waitVNI(100, 0))

	// The plugin registers a tenant (through the real registry code, so
	// the write pattern is the real one).
	if _, err := (tenant.Registry{Path: regPath}).Index("team-a"); err != nil {
		t.Fatal(err)
	}
	c := fw.waitCall(t, "team-a's device", waitVNI(101, 10001))
	if len(c.peers) != 2 || c.podCIDR != netip.MustParsePrefix(p1.PodCIDR) {
		t.Errorf("team-a's device got peers %v and pod CIDR %s, want the same as the default tenant", c.peers, c.podCIDR)
	}
	r = waitResult(t, fw, func(r Result) bool { return len(r.Devices) == 2 })
	if !r.OK() || r.Devices[1].Tenant != (Tenant{"team-a", 1}) || r.Devices[1].Device.Name() != "berth.101" {
		t.Errorf("result = %+v, want berth.100 and berth.101 for team-a", r)
	}

	// A broken registry keeps the devices of the last good one.
	drain(fw.results)
	writeAtomic(t, regPath, []byte(`{"tenants":`))
	r = waitResult(t, fw, func(r Result) bool { return r.RegistryErr != nil })
	if !r.Stale || r.OK() || len(r.Devices) != 2 || r.Err != nil {
		t.Errorf("result for a broken registry = %+v, want a stale re-apply of both devices", r)
	}
}

func TestWatcherTenantDeviceErrorsDoNotStopOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	writeAtomic(t, path, peersJSON(t, p1, p2))
	reg := filepath.Join(t.TempDir(), "tenants.json")
	writeAtomic(t, reg, []byte(`{"tenants":{"default":0,"a":1,"b":2},"next":3}`))
	w := &Watcher{
		Device: Device{VNI: 1, LocalIP: netip.MustParseAddr("198.18.0.1")}, PeersFile: path, NodeName: "n1",
		TenantRegistry: reg, ResyncInterval: -1, Logger: quietLogger(),
	}
	var applied []uint32
	w.apply = func(d *Device, _ []Peer, _ string) (Stats, error) {
		applied = append(applied, d.VNI)
		if d.VNI == 2 {
			return Stats{Added: 1, Peers: 1}, os.ErrPermission
		}
		return Stats{Added: 3, Peers: 1}, nil
	}
	results := make(chan Result, 1)
	w.OnResult = func(r Result) { results <- r }
	w.sync(path, TriggerStart)
	r := <-results
	if !slices.Equal(applied, []uint32{1, 2, 3}) {
		t.Errorf("devices applied = %v, want 1, 2, 3", applied)
	}
	if r.Err == nil || r.Devices[1].Err == nil || r.Devices[0].Err != nil || r.Devices[2].Err != nil {
		t.Errorf("errors = %v / per device %v %v %v, want only tenant a's", r.Err, r.Devices[0].Err, r.Devices[1].Err, r.Devices[2].Err)
	}
	if r.Stats != (Stats{Added: 7, Peers: 1}) {
		t.Errorf("stats = %+v, want the sum of the changes and the peer count once", r.Stats)
	}
}
