package ebpf

import (
	"net"
	"net/netip"

	"github.com/berthdev/berth/ebpf/attach"
)

// PodIdentity is what the isolation programs of one pod enforce.
type PodIdentity struct {
	Tenant uint32
	IPv4   netip.Addr // invalid if the pod has none
	IPv6   netip.Addr
	// MAC is the pod interface's address. CheckMAC is false for ipvlan,
	// whose children share the master's MAC.
	MAC      net.HardwareAddr
	CheckMAC bool
}

var podIsolation = []placement{
	{"tenant_pod_egress", attach.Egress, attach.First},
	{"tenant_pod_ingress", attach.Ingress, attach.First},
}

var vniIsolation = []placement{
	{"tenant_vni_ingress", attach.Ingress, attach.First},
}

// AttachIsolation attaches the tenant programs to the pod interface
// ifindex. Call it inside the pod's network namespace: that is where a pod
// without CAP_NET_ADMIN cannot remove them, and it works alike for macvlan,
// ipvlan and veth pods.
func (m *Maps) AttachIsolation(ifindex int, id PodIdentity) (attach.Mode, error) {
	spec, err := loadTenant()
	if err != nil {
		return "", err
	}
	var ip4, ip6 [16]byte
	if id.IPv4.IsValid() {
		ip4 = AddrKey(id.IPv4).B
	}
	if id.IPv6.IsValid() {
		ip6 = AddrKey(id.IPv6).B
	}
	var mac [6]byte
	copy(mac[:], id.MAC)
	var check uint8
	if id.CheckMAC && len(id.MAC) == 6 {
		check = 1
	}
	return m.loadAndAttach("tenant isolation", spec, map[string]any{
		"pod_tenant": id.Tenant, "pod_ip4": ip4, "pod_ip6": ip6, "pod_mac": mac, "check_mac": check,
	}, ifindex, podIsolation)
}

// DetachIsolation removes the pod programs from ifindex.
func DetachIsolation(ifindex int) error { return detachAll(ifindex, podIsolation) }

// IsolationAttached reports whether both pod programs are on ifindex.
func IsolationAttached(ifindex int) (bool, error) { return attachedAll(ifindex, podIsolation) }

// VNIGuardAttached reports whether the VNI guard sits on ifindex.
func VNIGuardAttached(ifindex int) (bool, error) { return attachedAll(ifindex, vniIsolation) }

// AttachVNIGuard attaches the VXLAN-device program that admits only
// packets for pods of tenant, the owner of the device's VNI.
func (m *Maps) AttachVNIGuard(ifindex int, tenant uint32) (attach.Mode, error) {
	spec, err := loadTenant()
	if err != nil {
		return "", err
	}
	return m.loadAndAttach("VNI guard", spec, map[string]any{"vni_tenant": tenant}, ifindex, vniIsolation)
}
