package driver

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCapacityFor(t *testing.T) {
	d := &Driver{cfg: Config{DefaultCapacity: 1 << 30}}
	for _, tc := range []struct {
		name     string
		req, lim int64
		want     int64
		code     codes.Code
	}{
		{"default", 0, 0, 1 << 30, codes.OK},
		{"default capped by limit", 0, 64 << 20, 64 << 20, codes.OK},
		{"rounded up to a block", 5<<20 + 1, 0, 5<<20 + 4096, codes.OK},
		{"minimum 1 MiB", 10, 0, 1 << 20, codes.OK},
		{"limit below the minimum", 0, 4096, 0, codes.OutOfRange},
		{"required above limit", 2 << 20, 1 << 20, 0, codes.InvalidArgument},
		{"negative", -1, 0, 0, codes.InvalidArgument},
	} {
		got, err := d.capacityFor(&csi.CapacityRange{RequiredBytes: tc.req, LimitBytes: tc.lim})
		if status.Code(err) != tc.code || got != tc.want {
			t.Errorf("%s: capacityFor(%d, %d) = %d, %v; want %d, %v", tc.name, tc.req, tc.lim, got, err, tc.want, tc.code)
		}
	}
}

func TestPage(t *testing.T) {
	for _, tc := range []struct {
		n          int
		token      string
		max        int32
		start, end int
		next       string
		code       codes.Code
	}{
		{5, "", 0, 0, 5, "", codes.OK},
		{5, "", 2, 0, 2, "2", codes.OK},
		{5, "2", 2, 2, 4, "4", codes.OK},
		{5, "4", 2, 4, 5, "", codes.OK},
		{5, "5", 2, 5, 5, "", codes.OK},
		{5, "6", 0, 0, 0, "", codes.Aborted},
		{5, "x", 0, 0, 0, "", codes.Aborted},
		{5, "", -1, 0, 0, "", codes.InvalidArgument},
	} {
		s, e, next, err := page(tc.n, tc.token, tc.max)
		if status.Code(err) != tc.code || (err == nil && (s != tc.start || e != tc.end || next != tc.next)) {
			t.Errorf("page(%d, %q, %d) = %d, %d, %q, %v", tc.n, tc.token, tc.max, s, e, next, err)
		}
	}
}

func TestCheckCapability(t *testing.T) {
	mode := &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}
	mount := func(flags ...string) *csi.VolumeCapability_Mount {
		return &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}}
	}
	for _, tc := range []struct {
		name string
		c    *csi.VolumeCapability
		code codes.Code
	}{
		{"mount, multi-node writer", &csi.VolumeCapability{AccessType: mount(), AccessMode: mode}, codes.OK},
		{"known flags", &csi.VolumeCapability{AccessType: mount("ro", "noatime"), AccessMode: mode}, codes.OK},
		{"unknown flag", &csi.VolumeCapability{AccessType: mount("loop"), AccessMode: mode}, codes.InvalidArgument},
		{"block", &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}, AccessMode: mode}, codes.InvalidArgument},
		{"no access mode", &csi.VolumeCapability{AccessType: mount()}, codes.InvalidArgument},
		{"no access type", &csi.VolumeCapability{AccessMode: mode}, codes.InvalidArgument},
		{"nil", nil, codes.InvalidArgument},
	} {
		if err := checkCapability("c", tc.c); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
}

func TestCheckParameters(t *testing.T) {
	for _, tc := range []struct {
		params map[string]string
		ok     bool
	}{
		{nil, true},
		{map[string]string{"maxInodes": "100", "csi.storage.k8s.io/pvc/name": "x"}, true},
		{map[string]string{"fsType": "ext4"}, false},
	} {
		if err := checkParameters(tc.params); (err == nil) != tc.ok {
			t.Errorf("checkParameters(%v) = %v", tc.params, err)
		}
	}
	if _, err := maxInodesFor(1<<20, map[string]string{"maxInodes": "3"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("maxInodes=3 accepted")
	}
	if n, _ := maxInodesFor(1<<30, nil); n != 1<<18 {
		t.Errorf("default inodes for 1 GiB = %d", n)
	}
}
