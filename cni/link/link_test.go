package link

import (
	"strings"
	"testing"
)

func TestAliasRoundTrip(t *testing.T) {
	tests := []struct{ network, cid, ifName string }{
		{"pods", "0123abcd", "eth0"},
		{"net:with:colons", "cid", "net1"},
		{"n", "", "eth0"},
	}
	for _, tc := range tests {
		n, c, i, ok := ParseAlias(Alias(tc.network, tc.cid, tc.ifName))
		if !ok || n != tc.network || c != tc.cid || i != tc.ifName {
			t.Errorf("ParseAlias(Alias(%q,%q,%q)) = %q,%q,%q,%v", tc.network, tc.cid, tc.ifName, n, c, i, ok)
		}
	}
	for _, foreign := range []string{"", "cali:abc", "berth", "berth:x"} {
		if _, _, _, ok := ParseAlias(foreign); ok {
			t.Errorf("ParseAlias(%q) accepted a foreign alias", foreign)
		}
	}
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("pods", "cid", "eth0")
	if len(a) > 15 {
		t.Errorf("%q is longer than IFNAMSIZ-1", a)
	}
	if !strings.HasPrefix(a, HostVethPrefix) {
		t.Errorf("%q lacks prefix %q", a, HostVethPrefix)
	}
	if a != HostVethName("pods", "cid", "eth0") {
		t.Error("not deterministic")
	}
	for _, other := range []string{
		HostVethName("pods2", "cid", "eth0"),
		HostVethName("pods", "cid2", "eth0"),
		HostVethName("pods", "cid", "eth1"),
	} {
		if other == a {
			t.Errorf("collision: %q", a)
		}
	}
}
