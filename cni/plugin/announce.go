package plugin

import (
	"encoding/binary"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
)

// announce sends one gratuitous ARP per IPv4 address of ifName so that
// neighbours drop a stale entry for a reused address at once. It is best
// effort: a lost announcement only delays convergence until caches expire.
func announce(ifName string, res *current.Result) {
	iface, err := net.InterfaceByName(ifName)
	if err != nil || len(iface.HardwareAddr) != 6 {
		return
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return
	}
	defer unix.Close(fd)
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for _, ipc := range res.IPs {
		ip4 := ipc.Address.IP.To4()
		if ip4 == nil {
			continue
		}
		frame := garpFrame(iface.HardwareAddr, ip4)
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: iface.Index, Halen: 6}
		copy(sa.Addr[:], bcast)
		_ = unix.Sendto(fd, frame, 0, sa)
	}
}

// garpFrame builds an Ethernet broadcast ARP request whose sender and target
// protocol addresses are both ip (RFC 5227 "ARP announcement").
func garpFrame(mac net.HardwareAddr, ip net.IP) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(f[14:16], 1)      // hardware type: Ethernet
	binary.BigEndian.PutUint16(f[16:18], 0x0800) // protocol: IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:22], 1) // request
	copy(f[22:28], mac)
	copy(f[28:32], ip)
	// target hardware address stays zero
	copy(f[38:42], ip)
	return f
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
