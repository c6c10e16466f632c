// Package overlay programs berth's VXLAN pod overlay on a node.
//
// Every node owns one VXLAN device per VNI, named "berth.<vni>". Remote pod
// CIDRs are routed onto that device through a per-peer gateway address (the
// peer's pod CIDR network address, the same address the peer puts on its own
// device), and the gateway is resolved by a static neighbour entry plus a
// static FDB entry that points the peer's VTEP MAC at its underlay IP. This is
// the flannel "vxlan" layout, with one difference: there is no control plane
// to distribute VTEP MACs, so every VTEP MAC is derived deterministically from
// (VNI, underlay IP) by MACFor. Any node can therefore compute the full
// forwarding state from nothing but the static peers file.
//
// With tenants, each tenant has a device and VNI of its own, VNIFor(vniBase,
// index), and its remote pod routes in a routing table of its own,
// TableFor(index) (the main table for the default tenant); see TenantDevice
// and Watcher.TenantRegistry.
//
// All functions act on the network namespace of the calling OS thread. Callers
// that switch namespaces must lock the goroutine to its thread for the whole
// call (ns.NetNS.Do does this).
//
// Reconcile is desired-state and idempotent, and it serialises with other
// processes (the CNI plugin during ADD, berth-netd) through a flock, so several
// writers converge instead of fighting.
package overlay
