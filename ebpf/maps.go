package ebpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// DefaultPinDir holds every berth map, so that programs loaded by any
// process (each CNI ADD, berth-netd) share one state and a restart of either
// keeps enforcement.
const DefaultPinDir = "/sys/fs/bpf/berth"

// Maps are the pinned maps shared by all programs.
type Maps struct {
	Endpoints *ebpf.Map // berth_endpoints: pod address -> tenant
	Allow     *ebpf.Map // berth_allow: allow-list prefixes -> ports
	Drops     *ebpf.Map // berth_drops: (tenant, reason) -> packets, per CPU
	EDT       *ebpf.Map // berth_edt: (pod, direction) -> rate and clock
	PodNets   *ebpf.Map // berth_podnets: the cluster's pod CIDRs
	Remote    *ebpf.Map // berth_remote: other nodes' pods and flat networks -> tenant
	dir       string
}

// Replacements feeds the shared maps to a collection being loaded.
func (m *Maps) Replacements(spec *ebpf.CollectionSpec) map[string]*ebpf.Map {
	all := map[string]*ebpf.Map{
		"berth_endpoints": m.Endpoints, "berth_allow": m.Allow,
		"berth_drops": m.Drops, "berth_edt": m.EDT, "berth_podnets": m.PodNets,
		"berth_remote": m.Remote,
	}
	out := map[string]*ebpf.Map{}
	for name, mp := range all {
		if _, ok := spec.Maps[name]; ok {
			out[name] = mp
		}
	}
	return out
}

// Close releases the maps' file descriptors; the pins keep them alive.
func (m *Maps) Close() {
	for _, mp := range []*ebpf.Map{m.Endpoints, m.Allow, m.Drops, m.EDT, m.PodNets, m.Remote} {
		if mp != nil {
			mp.Close()
		}
	}
}

// OpenMaps opens the pinned maps under dir, creating and pinning any that
// do not exist yet. A pinned map whose layout no longer matches (after an
// upgrade that changed it) is an error rather than silently replaced,
// because replacing it would drop every pod's enforcement state.
func OpenMaps(dir string) (*Maps, error) {
	if dir == "" {
		dir = DefaultPinDir
	}
	if err := ensureBPFFS(dir); err != nil {
		return nil, err
	}
	ts, err := loadTenant()
	if err != nil {
		return nil, err
	}
	ss, err := loadShape()
	if err != nil {
		return nil, err
	}
	open := func(spec *ebpf.MapSpec) (*ebpf.Map, error) {
		m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
		if errors.Is(err, os.ErrExist) {
			// Another CNI process pinned it between our lookup and our
			// create (parallel ADDs on a fresh node): use theirs.
			m, err = ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
		}
		if err != nil {
			return nil, fmt.Errorf("map %s pinned in %s: %w", spec.Name, dir, err)
		}
		return m, nil
	}
	m := &Maps{dir: dir}
	for _, x := range []struct {
		dst  **ebpf.Map
		spec *ebpf.MapSpec
	}{
		{&m.Endpoints, ts.Maps["berth_endpoints"]},
		{&m.Allow, ts.Maps["berth_allow"]},
		{&m.Drops, ts.Maps["berth_drops"]},
		{&m.EDT, ss.Maps["berth_edt"]},
		{&m.PodNets, ts.Maps["berth_podnets"]},
		{&m.Remote, ts.Maps["berth_remote"]},
	} {
		if *x.dst, err = open(x.spec); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// ensureBPFFS makes sure dir is on a BPF filesystem, mounting one at its
// parent when the node has none (containers and minimal hosts often lack
// /sys/fs/bpf), since pins on any other filesystem are impossible.
func ensureBPFFS(dir string) error {
	parent := filepath.Dir(dir)
	var st unix.Statfs_t
	if err := unix.Statfs(parent, &st); err != nil {
		return fmt.Errorf("bpffs: stat %s: %w", parent, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpffs", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("bpffs: %s is not a BPF filesystem and mounting one failed: %w", parent, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs: create %s: %w", dir, err)
	}
	return nil
}

// Addr is the map form of an address: IPv4 is stored IPv4-mapped so one
// map serves both families.
type Addr = tenantAddr

// AddrKey encodes a.
func AddrKey(a netip.Addr) Addr {
	return Addr{B: netip.AddrFrom16(a.As16()).As16()}
}

// AddrFromKey decodes k.
func AddrFromKey(k Addr) netip.Addr {
	return netip.AddrFrom16(k.B).Unmap()
}

// Endpoint is a berth_endpoints value.
type Endpoint = tenantEndpoint

// SetEndpoint records that pod address a belongs to tenant.
func (m *Maps) SetEndpoint(a netip.Addr, tenant uint32) error {
	return m.Endpoints.Update(AddrKey(a), Endpoint{Tenant: tenant}, ebpf.UpdateAny)
}

// DeleteEndpoint forgets a; a missing entry is fine.
func (m *Maps) DeleteEndpoint(a netip.Addr) error {
	err := m.Endpoints.Delete(AddrKey(a))
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// LookupEndpoint returns a's tenant.
func (m *Maps) LookupEndpoint(a netip.Addr) (uint32, bool, error) {
	var e Endpoint
	err := m.Endpoints.Lookup(AddrKey(a), &e)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	}
	return e.Tenant, err == nil, err
}

// ListEndpoints returns every endpoint.
func (m *Maps) ListEndpoints() (map[netip.Addr]uint32, error) {
	out := map[netip.Addr]uint32{}
	var k Addr
	var v Endpoint
	it := m.Endpoints.Iterate()
	for it.Next(&k, &v) {
		out[AddrFromKey(k)] = v.Tenant
	}
	return out, it.Err()
}

// PrefixFromKey decodes an LPM key made by AllowKeyFor.
func PrefixFromKey(k tenantAllowKey) netip.Prefix {
	a := netip.AddrFrom16(k.Addr.B)
	bits := int(k.Prefixlen)
	if a.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), bits-96)
	}
	return netip.PrefixFrom(a, bits)
}

// SetRemote records that addresses in p (a remote pod's address as a
// full-length prefix, or a flat network's subnet) belong to tenant.
func (m *Maps) SetRemote(p netip.Prefix, tenant uint32) error {
	return m.Remote.Update(AllowKeyFor(p), Endpoint{Tenant: tenant}, ebpf.UpdateAny)
}

// DeleteRemote forgets p; a missing entry is fine.
func (m *Maps) DeleteRemote(p netip.Prefix) error {
	err := m.Remote.Delete(AllowKeyFor(p))
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// ListRemote returns every berth_remote entry.
func (m *Maps) ListRemote() (map[netip.Prefix]uint32, error) {
	out := map[netip.Prefix]uint32{}
	var k tenantAllowKey
	var v Endpoint
	it := m.Remote.Iterate()
	for it.Next(&k, &v) {
		out[PrefixFromKey(k)] = v.Tenant
	}
	return out, it.Err()
}

// AllowPort is one (protocol, port) pair of an allow-list entry; zero
// values mean "any".
type AllowPort struct {
	Proto uint8
	Port  uint16
}

// MaxAllowPorts is how many pairs one prefix can carry.
const MaxAllowPorts = 8

// AllowKeyFor encodes a prefix as an LPM key over the IPv4-mapped form.
func AllowKeyFor(p netip.Prefix) tenantAllowKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return tenantAllowKey{Prefixlen: uint32(bits), Addr: AddrKey(p.Masked().Addr())}
}

// SetAllow makes p reachable from every tenant on ports (none = any).
func (m *Maps) SetAllow(p netip.Prefix, ports []AllowPort) error {
	if len(ports) > MaxAllowPorts {
		return fmt.Errorf("allow-list %s: %d ports, at most %d", p, len(ports), MaxAllowPorts)
	}
	var v tenantAllowVal
	if len(ports) == 0 {
		v.N = 1 // one wildcard pair
	} else {
		v.N = uint32(len(ports))
		for i, pp := range ports {
			v.Ports[i].Proto, v.Ports[i].Port = pp.Proto, pp.Port
		}
	}
	return m.Allow.Update(AllowKeyFor(p), v, ebpf.UpdateAny)
}

// ClearAllowExcept deletes allow-list entries not in keep, so the map
// follows the configuration when entries are removed from it.
func (m *Maps) ClearAllowExcept(keep []netip.Prefix) error {
	return clearLPMExcept(m.Allow, keep)
}

// SetPodNet records p as a pod CIDR of the cluster, and its network
// address, the owning node's VTEP address, as not a pod: a node's own
// traffic leaves its VXLAN device from that address.
func (m *Maps) SetPodNet(p netip.Prefix) error {
	p = p.Masked()
	if err := m.PodNets.Update(AllowKeyFor(p), uint32(1), ebpf.UpdateAny); err != nil {
		return err
	}
	vtep := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
	return m.PodNets.Update(AllowKeyFor(vtep), uint32(0), ebpf.UpdateAny)
}

// ClearPodNetsExcept deletes pod CIDRs (and their VTEP entries) not in
// keep.
func (m *Maps) ClearPodNetsExcept(keep []netip.Prefix) error {
	all := make([]netip.Prefix, 0, 2*len(keep))
	for _, p := range keep {
		p = p.Masked()
		all = append(all, p, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
	}
	return clearLPMExcept(m.PodNets, all)
}

func clearLPMExcept(mp *ebpf.Map, keep []netip.Prefix) error {
	want := map[tenantAllowKey]bool{}
	for _, p := range keep {
		want[AllowKeyFor(p)] = true
	}
	var k tenantAllowKey
	var stale []tenantAllowKey
	it := mp.Iterate()
	var v []byte
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range stale {
		if err := mp.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// Drop reasons, as in include/berth.h.
const (
	DropTenant uint32 = 1
	DropSpoof  uint32 = 2
	DropVNI    uint32 = 3
)

// DropReasonName is the label used in metrics.
func DropReasonName(r uint32) string {
	switch r {
	case DropTenant:
		return "cross_tenant"
	case DropSpoof:
		return "spoofed_source"
	case DropVNI:
		return "foreign_vni"
	}
	return fmt.Sprintf("reason_%d", r)
}

// DropKey is a berth_drops key.
type DropKey = tenantDropKey

// DropCounts sums the per-CPU drop counters.
func (m *Maps) DropCounts() (map[DropKey]uint64, error) {
	out := map[DropKey]uint64{}
	var k DropKey
	var per []uint64
	it := m.Drops.Iterate()
	for it.Next(&k, &per) {
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[k] = sum
	}
	return out, it.Err()
}

// explain turns a verifier rejection into one readable error: the program,
// the verifier's own last lines (where the reason is), not its whole log.
func explain(what string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := ve.Log
		if len(log) > 6 {
			log = log[len(log)-6:]
		}
		return fmt.Errorf("load %s: the kernel's BPF verifier rejected it: %s (verifier log tail: %s)",
			what, ve.Cause, strings.Join(log, " | "))
	}
	return fmt.Errorf("load %s: %w", what, err)
}
