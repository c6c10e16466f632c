package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/cni/ipam"
	"github.com/berthdev/berth/cni/overlay"
	bebpf "github.com/berthdev/berth/ebpf"
	"github.com/berthdev/berth/ebpf/attach"
)

// bpfMaps is the part of *bebpf.Maps berth-netd uses; tests substitute a
// fake to exercise the logic without a kernel.
type bpfMaps interface {
	AttachVNIGuard(ifindex int, tenant uint32) (attach.Mode, error)
	SetPodNet(p netip.Prefix) error
	ClearPodNetsExcept(keep []netip.Prefix) error
	DropCounts() (map[bebpf.DropKey]uint64, error)
	ListEndpoints() (map[netip.Addr]uint32, error)
	DeleteEndpoint(a netip.Addr) error
	Close()
}

func openBPFMaps(dir string) (bpfMaps, error) {
	m, err := bebpf.OpenMaps(dir)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// bpfTenantID is a tenant's identity in the BPF maps: its registry index
// plus one, so that the zero value of a map entry never names a tenant. The
// CNI plugin uses the same mapping.
func bpfTenantID(index uint32) uint32 { return index + 1 }

// dataplane keeps the node-wide BPF state that follows the overlay: the VNI
// guard on every tenant device, the set of pod CIDRs the guard consults, and
// (optionally) the removal of endpoints that no pod holds any more. It runs
// after every reconcile, on the Watcher's goroutine, so that its netlink and
// tc work happens in the Watcher's network namespace.
//
// BPF is an add-on here: when it is unavailable (no pin directory, an old
// kernel, a verifier rejection) the overlay still works, so every failure is
// logged and reflected in berth_netd_bpf_available, never fatal.
type dataplane struct {
	pinDir      string // "" disables all BPF work
	ipamDataDir string
	network     string // CNI network name; "" disables the endpoint GC
	log         *slog.Logger
	m           *metrics
	open        func(dir string) (bpfMaps, error)
	// guardAttached asks whether the VNI guard is on ifindex; tests stub it.
	guardAttached func(ifindex int) (bool, error)

	mu   sync.Mutex // guards maps, which the metrics collector reads
	maps bpfMaps

	// guarded maps a device name to the ifindex this process attached the
	// guard to. The first time a device is seen the guard is (re)attached
	// unconditionally, so a berth-netd upgrade replaces an older program;
	// afterwards only when it went missing or the device was recreated.
	guarded map[string]int
	// suspects are the stale endpoints of the previous GC pass, with the
	// tenant they had; see gcEndpoints.
	suspects map[netip.Addr]uint32
	// availableKnown/available track the last availability, so that a
	// node without BPF logs the reason once rather than every resync.
	availableKnown, available bool
}

func newDataplane(o options, logger *slog.Logger, m *metrics) *dataplane {
	return &dataplane{
		pinDir:        o.bpfPinDir,
		ipamDataDir:   o.ipamDataDir,
		network:       o.network,
		log:           logger,
		m:             m,
		open:          openBPFMaps,
		guardAttached: bebpf.VNIGuardAttached,
		guarded:       map[string]int{},
		suspects:      map[netip.Addr]uint32{},
	}
}

// currentMaps returns the open maps, or nil.
func (dp *dataplane) currentMaps() bpfMaps {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	return dp.maps
}

// close releases the maps (the pins keep them, and the attached programs,
// alive).
func (dp *dataplane) close() {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.maps != nil {
		dp.maps.Close()
		dp.maps = nil
	}
}

// ensureMaps opens the pinned maps on first use, and again on every sync
// until that succeeds: bpffs may be mounted, or the kernel upgraded, after
// berth-netd started.
func (dp *dataplane) ensureMaps() (bpfMaps, error) {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.maps != nil {
		return dp.maps, nil
	}
	m, err := dp.open(dp.pinDir)
	if err != nil {
		return nil, fmt.Errorf("open BPF maps in %s: %w", dp.pinDir, err)
	}
	dp.maps = m
	return m, nil
}

// sync brings the BPF state in line with one reconcile's result.
func (dp *dataplane) sync(r overlay.Result) {
	if dp.pinDir == "" || r.Skipped {
		return
	}
	maps, err := dp.ensureMaps()
	if err != nil {
		dp.setAvailable(false, err)
		return
	}
	err = errors.Join(dp.guardDevices(maps, r.Devices), dp.syncPodNets(maps, r))
	dp.setAvailable(err == nil, err)

	// The GC runs on the timer only: two passes one resync apart are what
	// makes it safe (see gcEndpoints), and file events can come
	// milliseconds apart.
	if dp.network != "" && (r.Trigger == overlay.TriggerStart || r.Trigger == overlay.TriggerResync) {
		removed, err := dp.gcEndpoints(maps, r.PodCIDR)
		if removed > 0 {
			dp.m.staleEndpoints.Add(float64(removed))
		}
		if err != nil {
			dp.log.Error("stale endpoint GC failed", "err", err)
		}
	}
}

// setAvailable records whether the BPF work of the last sync succeeded,
// logging only changes.
func (dp *dataplane) setAvailable(ok bool, err error) {
	if ok {
		dp.m.bpfAvailable.Set(1)
	} else {
		dp.m.bpfAvailable.Set(0)
	}
	switch {
	case dp.availableKnown && dp.available == ok:
		if err != nil {
			dp.log.Debug("BPF dataplane still unavailable", "err", err)
		}
	case ok:
		dp.log.Info("BPF dataplane programmed", "pinDir", dp.pinDir)
	default:
		dp.log.Warn("BPF dataplane unavailable; the overlay works without the VNI guard", "pinDir", dp.pinDir, "err", err)
	}
	dp.availableKnown, dp.available = true, ok
}

// guardDevices attaches the VNI guard to every tenant device that exists,
// with the device's tenant as the only one whose pods it may deliver to.
func (dp *dataplane) guardDevices(maps bpfMaps, devs []overlay.DeviceResult) error {
	var errs []error
	for _, d := range devs {
		name := d.Device.Name()
		link, err := netlink.LinkByName(name)
		if err != nil {
			// Its reconcile failed and was reported as such; there is
			// nothing to guard until it exists.
			delete(dp.guarded, name)
			continue
		}
		idx := link.Attrs().Index
		if dp.guarded[name] == idx {
			ok, err := dp.guardAttached(idx)
			if err == nil && ok {
				continue
			}
		}
		mode, err := maps.AttachVNIGuard(idx, bpfTenantID(d.Tenant.Index))
		if err != nil {
			delete(dp.guarded, name)
			errs = append(errs, fmt.Errorf("attach VNI guard to %s: %w", name, err))
			continue
		}
		dp.guarded[name] = idx
		dp.log.Info("attached VNI guard", "device", name, "tenant", d.Tenant.Name, "bpfTenant", bpfTenantID(d.Tenant.Index), "mode", string(mode))
	}
	return errors.Join(errs...)
}

// syncPodNets makes the pod CIDR set equal to the pod CIDRs of all peers (and
// this node's own, which may be given explicitly rather than listed). The
// guard only binds pod-sourced packets to their tenant's VNI, so a missing
// CIDR weakens it and a stale one would drop node traffic from that range.
// New entries go in before stale ones go out, so no valid CIDR is ever
// missing in between.
func (dp *dataplane) syncPodNets(maps bpfMaps, r overlay.Result) error {
	var want []netip.Prefix
	for _, p := range r.Peers {
		// The Watcher only applies validated peer lists.
		if c, err := netip.ParsePrefix(p.PodCIDR); err == nil {
			want = append(want, c.Masked())
		}
	}
	if r.PodCIDR.IsValid() && !slices.Contains(want, r.PodCIDR.Masked()) {
		want = append(want, r.PodCIDR.Masked())
	}
	for _, p := range want {
		if err := maps.SetPodNet(p); err != nil {
			return fmt.Errorf("add pod CIDR %s to the BPF pod net set: %w", p, err)
		}
	}
	if err := maps.ClearPodNetsExcept(want); err != nil {
		return fmt.Errorf("prune the BPF pod net set: %w", err)
	}
	return nil
}

// gcEndpoints deletes BPF endpoints of this node's pod CIDR whose address is
// no longer allocated, the leftovers of a DEL that never ran or crashed. A
// stale endpoint keeps claiming its address for a tenant, so when IPAM hands
// the address to a pod of another tenant, the old tenant's pods could reach it
// until the plugin overwrites the entry.
//
// Deleting a live endpoint is far worse (it lifts the isolation of a running
// pod), so the GC is careful in three ways:
//   - The endpoints are listed before the allocations. ADD allocates before
//     it registers the endpoint, so an endpoint seen in the first listing
//     whose address was allocated is still allocated in the second one,
//     unless a DEL released it, which makes it stale anyway.
//   - An endpoint is only deleted when the previous pass (one resync
//     earlier) found it stale too, with the same tenant. That leaves every
//     ADD or DEL in flight a full resync interval to finish.
//   - Without the network's IPAM directory (nothing allocated yet, a
//     network name that does not match, or a non-berth IPAM plugin) every
//     endpoint would look stale, so nothing is deleted.
func (dp *dataplane) gcEndpoints(maps bpfMaps, podCIDR netip.Prefix) (int, error) {
	if !podCIDR.IsValid() {
		dp.suspects = map[netip.Addr]uint32{}
		return 0, errors.New("this node's pod CIDR is unknown (neither --pod-cidr nor an entry in the peers file)")
	}
	podCIDR = podCIDR.Masked()
	eps, err := maps.ListEndpoints()
	if err != nil {
		return 0, fmt.Errorf("list BPF endpoints: %w", err)
	}
	alloc, err := ipam.New(dp.network, &ipam.Config{Subnet: podCIDR.String(), DataDir: dp.ipamDataDir})
	if err != nil {
		return 0, fmt.Errorf("IPAM store of network %q: %w", dp.network, err)
	}
	if _, err := os.Stat(alloc.Dir()); errors.Is(err, fs.ErrNotExist) {
		dp.log.Debug("no IPAM store for the network; skipping the endpoint GC", "dir", alloc.Dir())
		dp.suspects = map[netip.Addr]uint32{}
		return 0, nil
	}
	live, err := alloc.List()
	if err != nil {
		return 0, fmt.Errorf("list IPAM allocations in %s: %w", alloc.Dir(), err)
	}

	stale := map[netip.Addr]uint32{}
	for a, t := range eps {
		if _, ok := live[a]; !ok && podCIDR.Contains(a) {
			stale[a] = t
		}
	}
	removed := 0
	var errs []error
	for a, t := range stale {
		if prev, ok := dp.suspects[a]; !ok || prev != t {
			continue
		}
		if err := maps.DeleteEndpoint(a); err != nil {
			errs = append(errs, fmt.Errorf("delete stale endpoint %s: %w", a, err))
			continue
		}
		delete(stale, a)
		removed++
		dp.log.Info("removed stale BPF endpoint", "addr", a.String(), "bpfTenant", t)
	}
	if n := len(stale); n > 0 {
		dp.log.Debug("endpoints without an allocation; removing them next pass if still so", "count", n)
	}
	dp.suspects = stale
	return removed, errors.Join(errs...)
}
