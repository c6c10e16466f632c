package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/overlay"
	"github.com/berthdev/berth/cni/tenant"
	bebpf "github.com/berthdev/berth/ebpf"
)

// ErrCodeDataplane: loading or attaching the eBPF dataplane failed.
const ErrCodeDataplane = 102

// ErrCodeTenantMismatch: with tenancy.registryMode "cluster" the pod named
// a tenant (berth.dev/tenant label or annotation, runtimeConfig.tenant,
// BERTH_TENANT) other than its namespace's. Permanent: retrying cannot
// help until the pod or the Namespace label changes.
const ErrCodeTenantMismatch = 103

// dataplaneWanted reports whether this pod needs eBPF programs at all.
func (r *request) dataplaneWanted() bool {
	return r.conf.Tenancy.On() || r.conf.EffectiveBandwidth() != nil
}

// tenant resolves the pod's tenant and its index.
func (r *request) tenant() (string, uint32, error) {
	args := config.Args{}
	if err := types.LoadArgs(r.args.Args, &args); err != nil {
		return "", 0, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: "+err.Error(), "")
	}
	cluster := r.conf.Tenancy.RegistryMode == tenant.ModeCluster
	name, err := tenant.Resolve(tenant.Sources{
		RuntimeConfig:  r.conf.RuntimeConfig.Tenant,
		Args:           string(args.BERTH_TENANT),
		Annotations:    r.conf.RuntimeConfig.PodAnnotations,
		Namespace:      string(args.K8S_POD_NAMESPACE),
		MappingFile:    r.conf.Tenancy.MappingFile,
		RequireMapping: cluster,
		// In a cluster the Namespace label (the admin's) decides; a pod
		// label or annotation (the pod owner's) must not move a pod into
		// another tenant. See tenant.Sources.NamespaceDecides.
		NamespaceDecides: cluster,
	})
	var notYet *tenant.NotYetError
	if errors.As(err, &notYet) {
		return "", 0, types.NewError(types.ErrTryAgainLater, "tenant: "+err.Error(), "")
	}
	var mismatch *tenant.MismatchError
	if errors.As(err, &mismatch) {
		return "", 0, types.NewError(ErrCodeTenantMismatch, "tenant: "+err.Error(), "")
	}
	if err != nil {
		return "", 0, types.NewError(types.ErrInvalidNetworkConfig, "tenant: "+err.Error(), "")
	}
	reg := tenant.Registry{Path: r.conf.Tenancy.Registry}
	if !cluster {
		idx, err := reg.Index(name)
		if err != nil {
			return "", 0, types.NewError(types.ErrIOFailure, err.Error(), "")
		}
		return name, idx, nil
	}
	// The index must be the one every node uses for this tenant, so the
	// plugin never makes one up: berth-netd assigns it cluster-wide and
	// mirrors it here. Until then the runtime retries the sandbox (code
	// 11) rather than start a pod whose VNI other nodes would read as
	// another tenant's.
	idx, ok, err := reg.Lookup(name)
	if err != nil {
		return "", 0, types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	if !ok {
		return "", 0, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("tenant %q has no cluster-wide index in %s yet; berth-netd assigns one when a Namespace is labelled %s=%s", name, reg.Path, tenant.AnnotationKey, name), "")
	}
	return name, idx, nil
}

// bpfID is a tenant's identity in the maps; 0 is never used so an
// all-zero entry cannot match a real tenant.
func bpfID(idx uint32) uint32 { return idx + 1 }

func shapingOf(b *config.Bandwidth) bebpf.Shaping {
	if b == nil {
		return bebpf.Shaping{}
	}
	return bebpf.Shaping{
		Egress:  bebpf.Rate{BitsPerSec: b.EgressRate, BurstBits: b.EgressBurst},
		Ingress: bebpf.Rate{BitsPerSec: b.IngressRate, BurstBits: b.IngressBurst},
	}
}

func resultAddrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func firstOf(addrs []netip.Addr, v4 bool) netip.Addr {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// addDataplane registers the pod's addresses under its tenant, syncs the
// allow-list, and attaches isolation and shaping to the pod interface
// inside its namespace. Each step registers its own rollback.
func (r *request) addDataplane(netns ns.NetNS, res *current.Result, mac net.HardwareAddr) error {
	if !r.dataplaneWanted() {
		return nil
	}
	name, idx := r.tenantName, r.tenantIdx
	maps, err := bebpf.OpenMaps(r.conf.BPFPinDir)
	if err != nil {
		return types.NewError(ErrCodeDataplane, "bpfPinDir: cannot open the dataplane maps", err.Error())
	}
	defer maps.Close()

	addrs := resultAddrs(res)
	if r.conf.Tenancy.On() {
		for _, a := range addrs {
			if err := maps.SetEndpoint(a, bpfID(idx)); err != nil {
				return types.NewError(ErrCodeDataplane, "register endpoint "+a.String(), err.Error())
			}
		}
		r.onRollback(func() { r.forgetEndpoints(addrs) })
		for _, a := range r.conf.Tenancy.Allow {
			ports := make([]bebpf.AllowPort, 0, len(a.Ports))
			for _, p := range a.Ports {
				ports = append(ports, bebpf.AllowPort{Proto: p.ProtoNumber(), Port: p.Port})
			}
			if err := maps.SetAllow(a.Prefix, ports); err != nil {
				return types.NewError(ErrCodeDataplane, "tenancy.allow "+a.CIDR, err.Error())
			}
		}
	}
	shaping := shapingOf(r.conf.EffectiveBandwidth())
	path := bebpf.PathHTB
	if shaping.Egress.BitsPerSec > 0 || shaping.Ingress.BitsPerSec > 0 {
		path = bebpf.DetectPath()
	}
	var mode string
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(r.args.IfName)
		if err != nil {
			return err
		}
		if r.conf.Tenancy.On() {
			m, err := maps.AttachIsolation(l.Attrs().Index, bebpf.PodIdentity{
				Tenant: bpfID(idx), IPv4: firstOf(addrs, true), IPv6: firstOf(addrs, false),
				MAC: mac, CheckMAC: r.conf.Mode != config.ModeIPvlan,
			})
			if err != nil {
				return err
			}
			mode = string(m)
		}
		if shaping.Egress.BitsPerSec > 0 || shaping.Ingress.BitsPerSec > 0 {
			if err := maps.ApplyShaping(r.args.IfName, firstOf(addrs, true), shaping, path); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return types.NewError(ErrCodeDataplane, "attach eBPF dataplane to "+r.args.IfName, err.Error())
	}
	// The pod link's removal on rollback takes the programs and queues
	// with it; the ifb is removed explicitly.
	r.onRollback(func() {
		_ = netns.Do(func(ns.NetNS) error { return maps.RemoveShaping(r.args.IfName, firstOf(addrs, true)) })
	})
	r.log.Info("dataplane attached", "tenant", name, "tenantIndex", idx, "attach", mode,
		"shaping", path, "egressRate", shaping.Egress.BitsPerSec, "ingressRate", shaping.Ingress.BitsPerSec)
	return nil
}

// forgetEndpoints removes addrs from the maps (DEL, GC, rollback). A node
// that never had the maps has nothing to forget.
func (r *request) forgetEndpoints(addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	if _, err := os.Stat(r.conf.BPFPinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	maps, err := bebpf.OpenMaps(r.conf.BPFPinDir)
	if err != nil {
		return err
	}
	defer maps.Close()
	var errs []error
	for _, a := range addrs {
		errs = append(errs, maps.DeleteEndpoint(a), maps.ForgetShaping(a))
	}
	return errors.Join(errs...)
}

// checkDataplane verifies programs, queues and the endpoint entries.
func (r *request) checkDataplane(netns ns.NetNS, prev *current.Result) error {
	if !r.dataplaneWanted() {
		return nil
	}
	addrs := resultAddrs(prev)
	if r.conf.Tenancy.On() {
		_, idx, err := r.tenant()
		if err != nil {
			return err
		}
		maps, err := bebpf.OpenMaps(r.conf.BPFPinDir)
		if err != nil {
			return types.NewError(ErrCodeDataplane, "bpfPinDir: cannot open the dataplane maps", err.Error())
		}
		defer maps.Close()
		for _, a := range addrs {
			got, ok, err := maps.LookupEndpoint(a)
			if err != nil || !ok || got != bpfID(idx) {
				return types.NewError(types.ErrInternal, fmt.Sprintf("check: endpoint %s not registered for its tenant (found=%v id=%d)", a, ok, got), "")
			}
		}
		if r.conf.Mode == config.ModeVXLAN {
			if err := checkTenantRules(addrs, overlay.TableFor(idx)); err != nil {
				return err
			}
		}
	}
	shaping := shapingOf(r.conf.EffectiveBandwidth())
	return netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(r.args.IfName)
		if err != nil {
			return err
		}
		if r.conf.Tenancy.On() {
			if ok, err := bebpf.IsolationAttached(l.Attrs().Index); err != nil || !ok {
				return types.NewError(types.ErrInternal, "check: tenant isolation programs are not attached to "+r.args.IfName, fmt.Sprint(err))
			}
		}
		if shaping.Egress.BitsPerSec > 0 || shaping.Ingress.BitsPerSec > 0 {
			if err := bebpf.CheckShaping(r.args.IfName, shaping, bebpf.DetectPath()); err != nil {
				return types.NewError(types.ErrInternal, "check: shaping: "+err.Error(), "")
			}
		}
		return nil
	})
}

// registerPodNets records the cluster's pod CIDRs for the VNI guard, which
// binds only pod-sourced packets to their tenant's VNI.
func (r *request) registerPodNets(nets []netip.Prefix) error {
	if !r.conf.Tenancy.On() {
		return nil
	}
	maps, err := bebpf.OpenMaps(r.conf.BPFPinDir)
	if err != nil {
		return err
	}
	defer maps.Close()
	for _, n := range nets {
		if n.IsValid() {
			if err := maps.SetPodNet(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteTenantRules removes berth's source rules for addrs (DEL, GC).
func deleteTenantRules(addrs []netip.Addr) error {
	var errs []error
	for _, a := range addrs {
		family := netlink.FAMILY_V4
		if a.Is6() {
			family = netlink.FAMILY_V6
		}
		rules, err := netlink.RuleListFiltered(family, &netlink.Rule{Src: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}, netlink.RT_FILTER_SRC)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i := range rules {
			if rules[i].Priority == TenantRulePriority {
				if err := netlink.RuleDel(&rules[i]); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// guardVNI makes sure the tenant's VXLAN device carries the VNI guard, so a
// node without berth-netd is guarded as well. Loading it is skipped when
// it is already there (the common case after the first pod).
func (r *request) guardVNI(ifindex int, tenantIdx uint32) error {
	if ok, err := bebpf.VNIGuardAttached(ifindex); err == nil && ok {
		return nil
	}
	maps, err := bebpf.OpenMaps(r.conf.BPFPinDir)
	if err != nil {
		return types.NewError(ErrCodeDataplane, "bpfPinDir: cannot open the dataplane maps", err.Error())
	}
	defer maps.Close()
	if _, err := maps.AttachVNIGuard(ifindex, bpfID(tenantIdx)); err != nil {
		return types.NewError(ErrCodeDataplane, "attach the VNI guard", err.Error())
	}
	return nil
}

// checkTenantRules verifies that each pod address is steered into table
// (or, for the default tenant's table 0, that no berth rule diverts it).
func checkTenantRules(addrs []netip.Addr, table int) error {
	for _, a := range addrs {
		family := netlink.FAMILY_V4
		if a.Is6() {
			family = netlink.FAMILY_V6
		}
		rules, err := netlink.RuleListFiltered(family, &netlink.Rule{Src: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}, netlink.RT_FILTER_SRC)
		if err != nil {
			return types.NewError(types.ErrIOFailure, "list routing rules", err.Error())
		}
		found := false
		for _, ru := range rules {
			if ru.Priority == TenantRulePriority {
				found = found || ru.Table == table
				if ru.Table != table {
					return types.NewError(types.ErrInternal, fmt.Sprintf("check: %s is steered into table %d, its tenant's is %d", a, ru.Table, table), "")
				}
			}
		}
		if table != 0 && !found {
			return types.NewError(types.ErrInternal, fmt.Sprintf("check: no rule steers %s into its tenant's table %d", a, table), "")
		}
	}
	return nil
}
