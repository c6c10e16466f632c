package plugin

import (
	"bytes"
	"net"
	"testing"
)

// The announcement must be a broadcast ARP request whose sender and target
// protocol addresses are the pod's own (RFC 5227 section 3).
func TestGARPFrame(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	ip := net.ParseIP("198.18.10.7").To4()
	f := garpFrame(mac, ip)
	checks := []struct {
		name     string
		from, to int
		want     []byte
	}{
		{"eth dst broadcast", 0, 6, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"eth src", 6, 12, mac},
		{"ethertype ARP", 12, 14, []byte{0x08, 0x06}},
		{"htype/ptype/hlen/plen", 14, 20, []byte{0, 1, 8, 0, 6, 4}},
		{"op request", 20, 22, []byte{0, 1}},
		{"sender MAC", 22, 28, mac},
		{"sender IP", 28, 32, ip},
		{"target MAC zero", 32, 38, make([]byte, 6)},
		{"target IP", 38, 42, ip},
	}
	if len(f) != 42 {
		t.Fatalf("frame length %d", len(f))
	}
	for _, c := range checks {
		if !bytes.Equal(f[c.from:c.to], c.want) {
			t.Errorf("%s: % x, want % x", c.name, f[c.from:c.to], c.want)
		}
	}
}
