package overlay

import (
	"crypto/sha256"
	"encoding/binary"
	"net"
	"net/netip"
)

// macDomain separates berth's MAC derivation from any other use of the same
// hash inputs; changing it changes every VTEP MAC in the cluster, so it must
// stay fixed once released.
const macDomain = "berth-vxlan-vtep-mac/v1"

// MACFor returns the VTEP MAC address that the node with the given underlay
// address uses on the VXLAN device for vni.
//
// The static peers file carries no MACs, so every node must be able to compute
// every peer's VTEP MAC on its own: the MAC is the first six bytes of
// SHA-256(domain, vni, underlay), with the locally-administered bit set and the
// multicast bit cleared so it never clashes with vendor-assigned addresses and
// is a valid unicast source address. IPv4 and IPv4-mapped IPv6 forms of the
// same address give the same MAC.
//
// With 46 free bits, the chance of two nodes of an N-node cluster colliding is
// about N²/2⁴⁷ (under 10⁻⁶ for 10,000 nodes).
func MACFor(vni uint32, underlay netip.Addr) net.HardwareAddr {
	h := sha256.New()
	h.Write([]byte(macDomain))
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], vni)
	h.Write(v[:])
	ip := underlay.Unmap().As16()
	h.Write(ip[:])
	sum := h.Sum(nil)

	mac := make(net.HardwareAddr, 6)
	copy(mac, sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}
