package ebpf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func TestAddrKey(t *testing.T) {
	tests := []struct {
		in   string
		want [16]byte
	}{
		{"198.18.0.1", [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 0, 15: 1}},
		{"::ffff:198.18.0.1", [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 0, 15: 1}},
		{"2001:db8::1", [16]byte{0: 0x20, 1: 0x01, 2: 0x0d, 3: 0xb8, 15: 1}},
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.in)
		k := AddrKey(a)
		if k.B != tc.want {
			t.Errorf("AddrKey(%s) = % x, want % x", tc.in, k.B, tc.want)
		}
		if back := AddrFromKey(k); back != a.Unmap() {
			t.Errorf("AddrFromKey(AddrKey(%s)) = %s", tc.in, back)
		}
	}
}

func TestAllowKeyFor(t *testing.T) {
	tests := []struct {
		prefix string
		bits   uint32
		addr   string
	}{
		{"10.96.0.10/32", 128, "10.96.0.10"},
		{"10.96.0.0/12", 108, "10.96.0.0"},
		{"10.96.7.9/12", 108, "10.96.0.0"}, // host bits masked off
		{"fd00::/8", 8, "fd00::"},
	}
	for _, tc := range tests {
		k := AllowKeyFor(netip.MustParsePrefix(tc.prefix))
		if k.Prefixlen != tc.bits || AddrFromKey(k.Addr) != netip.MustParseAddr(tc.addr) {
			t.Errorf("AllowKeyFor(%s) = /%d %s, want /%d %s", tc.prefix, k.Prefixlen, AddrFromKey(k.Addr), tc.bits, tc.addr)
		}
	}
}

// TestPrefixFromKey checks that berth_remote's keys decode to the prefix
// they were made from, so berth-netd's reconcile compares like with like.
func TestPrefixFromKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"198.19.1.5/32", "198.19.1.5/32"},
		{"198.19.0.0/16", "198.19.0.0/16"},
		{"198.19.7.9/16", "198.19.0.0/16"}, // keys hold the masked prefix
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"fd00::5/128", "fd00::5/128"},
		{"fd00::/64", "fd00::/64"},
	} {
		if got := PrefixFromKey(AllowKeyFor(netip.MustParsePrefix(tc.in))); got != netip.MustParsePrefix(tc.want) {
			t.Errorf("PrefixFromKey(AllowKeyFor(%s)) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestRateConversions(t *testing.T) {
	tests := []struct {
		rate      uint64
		burstBits uint64
		queue     uint32
		gso       int
	}{
		// 10 Mbit/s: the floors apply (eight frames of burst, ten frames
		// of queue, two frames of GSO).
		{10e6, 8 * 1514 * 8, 15140, 3028},
		// 100 Mbit/s: 4 ms of burst, 5 ms (62500 bytes) of queue, 1 ms
		// (12500 bytes) of GSO.
		{100e6, 400000, 62500, 12500},
		// 1 Gbit/s: 4 ms of burst, 5 ms of queue, GSO capped at 64 KiB.
		{1e9, 4e6, 625000, 65536},
		// 40 Gbit/s.
		{40e9, 160e6, 25000000, 65536},
	}
	for _, tc := range tests {
		if got := DefaultBurst(tc.rate); got != tc.burstBits {
			t.Errorf("DefaultBurst(%d) = %d, want %d", tc.rate, got, tc.burstBits)
		}
		if got := QueueBytes(tc.rate); got != tc.queue {
			t.Errorf("QueueBytes(%d) = %d, want %d", tc.rate, got, tc.queue)
		}
		if got := GSOFor(tc.rate); got != tc.gso {
			t.Errorf("GSOFor(%d) = %d, want %d", tc.rate, got, tc.gso)
		}
	}
}

func TestIFBName(t *testing.T) {
	for in, want := range map[string]string{"eth0": "bifb-eth0", "averyveryverylongname": "bifb-averyveryv"} {
		if got := IFBName(in); got != want || len(got) > 15 {
			t.Errorf("IFBName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDropReasonName(t *testing.T) {
	for r, want := range map[uint32]string{DropTenant: "cross_tenant", DropSpoof: "spoofed_source", DropVNI: "foreign_vni", 9: "reason_9"} {
		if got := DropReasonName(r); got != want {
			t.Errorf("DropReasonName(%d) = %q, want %q", r, got, want)
		}
	}
}

// A program the verifier rejects must produce one readable error that
// names the program and carries the verifier's reason.
func TestVerifierErrorIsReadable(t *testing.T) {
	requireRoot(t)
	spec := &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{
		"bad": {Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
			// Reads an uninitialised register: always rejected.
			asm.Mov.Reg(asm.R0, asm.R5),
			asm.Return(),
		}},
	}}
	_, err := ebpf.NewCollection(spec)
	if err == nil {
		t.Fatal("the verifier accepted a program reading an uninitialised register")
	}
	msg := explain("test program", err).Error()
	if !strings.Contains(msg, "verifier rejected") || !strings.Contains(msg, "test program") || !strings.Contains(msg, "R5") {
		t.Errorf("unreadable verifier error: %s", msg)
	}
}
