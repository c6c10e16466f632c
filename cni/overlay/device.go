package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// DefaultPort is the IANA-assigned VXLAN port. The kernel's own default
	// is the pre-IANA 8472, so the port is always set explicitly.
	DefaultPort = 4789

	// maxVNI is the largest 24-bit VXLAN network identifier.
	maxVNI = 1<<24 - 1

	// VXLAN encapsulation overhead: outer Ethernet is not counted against
	// the underlay MTU, the rest is outer IP + UDP (8) + VXLAN (8) + inner
	// Ethernet (14).
	overheadV4 = 20 + 8 + 8 + 14
	overheadV6 = 40 + 8 + 8 + 14

	// minMTU is the IPv4 minimum; a device below it cannot carry IPv4.
	minMTU = 68
)

// Device describes the node's VXLAN device for one VNI. The zero values of
// Port, MTU and LockDir select defaults; VNI and LocalIP are required.
type Device struct {
	VNI     uint32
	Port    int          // UDP port; 0 => DefaultPort
	LocalIP netip.Addr   // underlay address of this node (VTEP source)
	PodCIDR netip.Prefix // this node's pod CIDR; invalid => the device's addresses are left alone
	MTU     int          // 0 => underlay link MTU minus the VXLAN overhead
	LockDir string       // "" => DefaultLockDir
	// Table is the routing table that receives the routes to remote pod
	// CIDRs; 0 => the main table. Only routes on this device in this
	// table are pruned, so a device never touches another table's state.
	Table int

	// Logger receives debug records of every change; nil => slog.Default().
	Logger *slog.Logger
}

// Stats counts the changes one Reconcile made. A converged node reports zero
// for both, which makes "Added+Removed > 0" a cheap drift signal.
type Stats struct {
	Added   int // routes, neighbours and FDB entries created or corrected
	Removed int // stale routes, neighbours and FDB entries deleted
	Peers   int // remote peers in the desired state
}

// Name returns the device name, "berth.<vni>".
func (d *Device) Name() string { return "berth." + strconv.FormatUint(uint64(d.VNI), 10) }

func (d *Device) log() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}

func (d *Device) port() int {
	if d.Port == 0 {
		return DefaultPort
	}
	return d.Port
}

func (d *Device) localIP() netip.Addr { return d.LocalIP.Unmap() }

// table returns the kernel table ID of the device's routes.
func (d *Device) table() int {
	if d.Table == 0 {
		return unix.RT_TABLE_MAIN
	}
	return d.Table
}

// validate checks the fields that cannot be defaulted.
func (d *Device) validate() error {
	if d.VNI == 0 || d.VNI > maxVNI {
		return fmt.Errorf("overlay: VNI %d out of range 1-%d", d.VNI, maxVNI)
	}
	if p := d.port(); p < 1 || p > 65535 {
		return fmt.Errorf("overlay: port %d out of range 1-65535", p)
	}
	if ip := d.localIP(); !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.Zone() != "" {
		return fmt.Errorf("overlay: local underlay IP %q is not a usable unicast address", d.LocalIP)
	}
	if d.MTU != 0 && d.MTU < minMTU {
		return fmt.Errorf("overlay: MTU %d below the minimum of %d", d.MTU, minMTU)
	}
	// The local table decides what is addressed to this host and "default"
	// is consulted after main by the stock rules; pod routes in either
	// would hijack traffic that has nothing to do with the overlay.
	switch t := d.Table; {
	case t < 0 || int64(t) > math.MaxUint32:
		return fmt.Errorf("overlay: routing table %d out of range 0-%d", t, uint32(math.MaxUint32))
	case t == unix.RT_TABLE_LOCAL || t == unix.RT_TABLE_DEFAULT:
		return fmt.Errorf("overlay: routing table %d is reserved (local/default), use 0 for main or a table of its own", t)
	}
	return nil
}

// lock takes the cross-process lock for this VNI.
func (d *Device) lock() (*fileLock, error) {
	dir := d.LockDir
	if dir == "" {
		dir = DefaultLockDir
	}
	return acquireLock(filepath.Join(dir, fmt.Sprintf("overlay-%d.lock", d.VNI)))
}

// Ensure creates the VXLAN device, or fixes up an existing one, so that it
// matches d: VNI, port, source address, underlay parent, learning off, MAC,
// MTU, up, and (when PodCIDR is valid) the pod CIDR's network address as its
// only global address. It is idempotent and safe to call concurrently with
// other processes doing the same.
func (d *Device) Ensure() (netlink.Link, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	l, err := d.lock()
	if err != nil {
		return nil, err
	}
	defer l.release()
	return d.ensureLocked()
}

// Delete removes the device, and with it every route, neighbour and FDB
// entry on it. A missing device is not an error.
func (d *Device) Delete() error {
	if d.VNI == 0 || d.VNI > maxVNI {
		return fmt.Errorf("overlay: VNI %d out of range 1-%d", d.VNI, maxVNI)
	}
	l, err := d.lock()
	if err != nil {
		return err
	}
	defer l.release()
	link, err := netlink.LinkByName(d.Name())
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("overlay: look up %s: %w", d.Name(), err)
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return fmt.Errorf("overlay: %s is a %s link, not a VXLAN device berth created; refusing to delete it", d.Name(), link.Type())
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("overlay: delete %s: %w", d.Name(), err)
	}
	d.log().Info("deleted VXLAN device", "device", d.Name())
	return nil
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// wantLink builds the desired device from d and the underlay link.
func (d *Device) wantLink(parent netlink.Link) (*netlink.Vxlan, error) {
	mtu := d.MTU
	if mtu == 0 {
		overhead := overheadV4
		if d.localIP().Is6() {
			overhead = overheadV6
		}
		mtu = parent.Attrs().MTU - overhead
		if mtu < minMTU {
			return nil, fmt.Errorf("overlay: underlay link %s MTU %d leaves only %d for the VXLAN device", parent.Attrs().Name, parent.Attrs().MTU, mtu)
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = d.Name()
	attrs.MTU = mtu
	attrs.HardwareAddr = MACFor(d.VNI, d.localIP())
	return &netlink.Vxlan{
		LinkAttrs:    attrs,
		VxlanId:      int(d.VNI),
		VtepDevIndex: parent.Attrs().Index,
		SrcAddr:      ipOf(d.localIP()),
		Port:         d.port(),
		// Every remote MAC is programmed statically; learning would let
		// any packet arriving on the port overwrite those entries.
		Learning: false,
	}, nil
}

// immutableMismatch reports which property of an existing VXLAN device
// differs from the wanted one in a way that can only be fixed by recreating
// it ("" when none does). The kernel either refuses to change these on a live
// device or (for the VNI, port and source) changing them would re-key the
// device's sockets; recreating is simpler and the caller reprograms it anyway.
func immutableMismatch(have, want *netlink.Vxlan) string {
	switch {
	case have.VxlanId != want.VxlanId:
		return fmt.Sprintf("VNI %d, want %d", have.VxlanId, want.VxlanId)
	case have.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", have.Port, want.Port)
	case !have.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local %s, want %s", have.SrcAddr, want.SrcAddr)
	case have.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay link index %d, want %d", have.VtepDevIndex, want.VtepDevIndex)
	case have.Learning != want.Learning:
		return fmt.Sprintf("learning %t, want %t", have.Learning, want.Learning)
	case have.FlowBased:
		return "external (flow-based) mode"
	case len(have.Group) > 0 && !have.Group.IsUnspecified():
		return fmt.Sprintf("group/remote %s, want none", have.Group)
	}
	return ""
}

func (d *Device) ensureLocked() (netlink.Link, error) {
	log := d.log().With("device", d.Name())
	parent, err := linkWithAddr(d.localIP())
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	want, err := d.wantLink(parent)
	if err != nil {
		return nil, err
	}

	link, err := netlink.LinkByName(want.Name)
	switch {
	case err == nil:
		have, ok := link.(*netlink.Vxlan)
		if !ok {
			// Never delete a link berth did not create: the name may be
			// a coincidence, and removing an admin's device is worse than
			// failing loudly.
			return nil, fmt.Errorf("overlay: %s exists but is a %s link, not VXLAN", want.Name, link.Type())
		}
		if why := immutableMismatch(have, want); why != "" {
			log.Warn("recreating VXLAN device with wrong settings", "reason", why)
			if err := netlink.LinkDel(have); err != nil && !isNotFound(err) {
				return nil, fmt.Errorf("overlay: delete outdated %s: %w", want.Name, err)
			}
			if link, err = d.createLink(want); err != nil {
				return nil, err
			}
		}
	case isNotFound(err):
		if link, err = d.createLink(want); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("overlay: look up %s: %w", want.Name, err)
	}

	if !bytes.Equal(link.Attrs().HardwareAddr, want.HardwareAddr) {
		// Peers reach this node only through the MAC they compute with
		// MACFor, so any other MAC black-holes all inbound overlay traffic.
		if err := netlink.LinkSetHardwareAddr(link, want.HardwareAddr); err != nil {
			return nil, fmt.Errorf("overlay: set MAC of %s: %w", want.Name, err)
		}
		log.Debug("set device MAC", "mac", want.HardwareAddr.String())
	}
	if link.Attrs().MTU != want.MTU {
		if err := netlink.LinkSetMTU(link, want.MTU); err != nil {
			return nil, fmt.Errorf("overlay: set MTU of %s to %d: %w", want.Name, want.MTU, err)
		}
		log.Debug("set device MTU", "mtu", want.MTU)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("overlay: set %s up: %w", want.Name, err)
		}
		log.Debug("set device up")
	}
	if d.PodCIDR.IsValid() {
		if err := d.ensureAddress(link); err != nil {
			return nil, err
		}
	}
	// Re-read so the caller sees the final state (flags, MAC, MTU).
	link, err = netlink.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("overlay: look up %s: %w", want.Name, err)
	}
	return link, nil
}

// createLink adds the device. EEXIST means a writer that does not take our
// lock (an older berth, an admin) created it in the meantime; that is fine as
// long as it is compatible.
func (d *Device) createLink(want *netlink.Vxlan) (netlink.Link, error) {
	err := netlink.LinkAdd(want)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("overlay: create %s: %w", want.Name, err)
	}
	link, lerr := netlink.LinkByName(want.Name)
	if lerr != nil {
		return nil, fmt.Errorf("overlay: look up %s after create: %w", want.Name, lerr)
	}
	if err != nil {
		have, ok := link.(*netlink.Vxlan)
		if !ok {
			return nil, fmt.Errorf("overlay: %s appeared concurrently as a %s link, not VXLAN", want.Name, link.Type())
		}
		if why := immutableMismatch(have, want); why != "" {
			return nil, fmt.Errorf("overlay: %s appeared concurrently with %s", want.Name, why)
		}
		return link, nil
	}
	d.log().Info("created VXLAN device", "device", want.Name, "vni", want.VxlanId,
		"local", want.SrcAddr.String(), "port", want.Port, "mtu", want.MTU, "mac", want.HardwareAddr.String())
	return link, nil
}

// ensureAddress makes the pod CIDR's network address (as a host route, /32 or
// /128) the device's only global address. Other nodes use that address as the
// next hop for this node's pod CIDR, and the node itself uses it as the
// source when it talks to remote pods, so their replies come back over the
// overlay. A host prefix keeps the kernel from adding a connected route that
// would compete with the per-peer routes.
func (d *Device) ensureAddress(link netlink.Link) error {
	gw := d.PodCIDR.Masked().Addr()
	want := netip.PrefixFrom(gw, gw.BitLen())
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("overlay: list addresses of %s: %w", link.Attrs().Name, err)
	}
	have := false
	for _, a := range addrs {
		p := prefixFrom(a.IPNet)
		if p == want {
			have = true
			continue
		}
		// Link-local addresses belong to the kernel (IPv6 needs one on
		// every interface); only global ones can be stale pod CIDRs.
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("overlay: remove stale address %s from %s: %w", p, link.Attrs().Name, err)
		}
		d.log().Info("removed stale device address", "device", link.Attrs().Name, "addr", p.String())
	}
	if have {
		return nil
	}
	addr := &netlink.Addr{IPNet: prefixOf(want)}
	if want.Addr().Is6() {
		// The address is unique by construction (it is derived from this
		// node's pod CIDR), and duplicate address detection would leave it
		// tentative, and unusable as a source, for the first second or so.
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("overlay: add address %s to %s: %w", want, link.Attrs().Name, err)
	}
	d.log().Debug("added device address", "device", link.Attrs().Name, "addr", want.String())
	return nil
}
