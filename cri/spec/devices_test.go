package spec

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestContainerOptsDevices(t *testing.T) {
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Skip("no /dev/null")
	}
	link := filepath.Join(t.TempDir(), "null-link")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		dev       *runtime.Device
		wantPath  string
		wantPerms string
		errMsg    string
	}{
		{"device", &runtime.Device{HostPath: "/dev/null", ContainerPath: "/dev/xnull", Permissions: "rw"}, "/dev/xnull", "rw", ""},
		{"default permissions", &runtime.Device{HostPath: "/dev/null", ContainerPath: "/dev/ynull"}, "/dev/ynull", "rwm", ""},
		{"symlink resolved", &runtime.Device{HostPath: link, ContainerPath: "/dev/znull", Permissions: "r"}, "/dev/znull", "r", ""},
		{"missing", &runtime.Device{HostPath: "/dev/does-not-exist", ContainerPath: "/dev/x"}, "", "", "config.devices[0].host_path \"/dev/does-not-exist\""},
		{"not a device", &runtime.Device{HostPath: "/etc/hostname", ContainerPath: "/dev/x"}, "", "", "config.devices[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "not a device" {
				if _, err := os.Stat("/etc/hostname"); err != nil {
					t.Skip("no /etc/hostname")
				}
			}
			c := testContainerConfig()
			c.Devices = []*runtime.Device{tc.dev}
			s, err := containerSpec(t, c, testSandbox(), testImage, testRuntime)
			if tc.errMsg != "" {
				if err == nil {
					t.Fatal("expected an error")
				}
				if tc.name == "missing" {
					wantCode(t, err, codes.InvalidArgument, tc.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Linux.Devices) != 1 {
				t.Fatalf("devices = %+v", s.Linux.Devices)
			}
			d := s.Linux.Devices[0]
			if d.Path != tc.wantPath || d.Type != "c" || d.Major != 1 || d.Minor != 3 {
				t.Errorf("device = %+v", d)
			}
			found := false
			for _, r := range s.Linux.Resources.Devices {
				if r.Allow && r.Major != nil && *r.Major == 1 && r.Minor != nil && *r.Minor == 3 {
					found = true
					if r.Access != tc.wantPerms {
						t.Errorf("access = %q, want %q", r.Access, tc.wantPerms)
					}
				}
			}
			if !found {
				t.Errorf("no cgroup rule for the device: %+v", s.Linux.Resources.Devices)
			}
			// The default deny-all rule stays first.
			if r := s.Linux.Resources.Devices[0]; r.Allow || r.Access != "rwm" {
				t.Errorf("first device rule = %+v, want deny all", r)
			}
		})
	}
}
