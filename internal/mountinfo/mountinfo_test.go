package mountinfo

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Mount
		ok   bool
	}{
		{`36 35 0:39 / /var/lib/kubelet/pods/x/mount rw,nosuid shared:1 - fuse.berth-csi berth-csi:vol-1 rw,user_id=0`,
			Mount{Major: 0, Minor: 39, Root: "/", Point: "/var/lib/kubelet/pods/x/mount", FSType: "fuse.berth-csi", Source: "berth-csi:vol-1", Options: "rw,nosuid", SuperOptions: "rw,user_id=0"}, true},
		{`22 1 8:1 / /a\040b rw - ext4 /dev/sda1 rw`, Mount{Major: 8, Minor: 1, Root: "/", Point: "/a b", FSType: "ext4", Source: "/dev/sda1", Options: "rw", SuperOptions: "rw"}, true},
		{`40 30 0:33 /docker/abc /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory`,
			Mount{Major: 0, Minor: 33, Root: "/docker/abc", Point: "/sys/fs/cgroup/memory", FSType: "cgroup", Source: "cgroup", Options: "rw,nosuid", SuperOptions: "rw,memory"}, true},
		{`short line`, Mount{}, false},
	} {
		got, ok := parse(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parse(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/t\011x\134`: "/t\tx\\", `/bad\9`: `/bad\9`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
