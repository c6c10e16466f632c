package overlay

// Per-tenant overlays. In VXLAN mode every tenant gets a device of its own,
// berth.<vniBase+index>, so tenants are apart on the wire and not just at the
// pods: a packet of one tenant can only be decapsulated into another tenant's
// device by forging the VNI, which the VNI guard BPF program then catches.
//
// The default tenant (index 0) keeps the main routing table, because its
// device also carries the node's own traffic to remote pods (kube-proxy SNAT,
// probes through the node), which the main table routes. Every other tenant's
// remote pod routes live in a table of its own, TableFor(index), and the CNI
// plugin steers each of that tenant's pods into it with a per-pod
// `ip rule from <podIP> lookup <table>`. A lookup that finds no route in the
// tenant table falls through to the next rule, so such pods still reach the
// node, local pods and the outside world through the main table.

// TableBase is added to a tenant index to form its routing table. 10000 is
// well clear of the small IDs named in /etc/iproute2/rt_tables (and of the
// reserved 253-255), and with tenant.MaxTenants (4096) the tables stay below
// 15000.
const TableBase = 10000

// VNIFor returns the VNI of the tenant with the given registry index:
// base + index, so the default tenant (index 0) keeps the base VNI and the
// single-tenant layout is the multi-tenant one with one tenant. The result is
// not range-checked; Device.Reconcile rejects a VNI beyond 2^24-1.
func VNIFor(base, tenantIndex uint32) uint32 { return base + tenantIndex }

// TableFor returns the routing table of the tenant with the given registry
// index: 0 (the main table) for the default tenant, TableBase+index for every
// other one.
func TableFor(tenantIndex uint32) int {
	if tenantIndex == 0 {
		return 0
	}
	return TableBase + int(tenantIndex)
}

// TenantDevice returns a copy of base configured as the device of the tenant
// with the given registry index: VNI VNIFor(vniBase, index), routes in
// TableFor(index). Everything else (underlay, pod CIDR, port, MTU, lock
// directory) is shared by all tenants of the node.
func TenantDevice(base Device, vniBase, tenantIndex uint32) Device {
	base.VNI = VNIFor(vniBase, tenantIndex)
	base.Table = TableFor(tenantIndex)
	return base
}
