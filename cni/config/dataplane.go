package config

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/berthdev/berth/cni/tenant"
)

// Bandwidth is the CNI "bandwidth" capability's shape (rates in bit/s,
// bursts in bits), used both in runtimeConfig and as the network default.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// Shaped reports whether any direction is limited.
func (b *Bandwidth) Shaped() bool { return b != nil && (b.IngressRate > 0 || b.EgressRate > 0) }

// AllowEntry is a destination every tenant may reach (and get replies from).
type AllowEntry struct {
	CIDR  string      `json:"cidr"`
	Ports []AllowPort `json:"ports,omitempty"` // none = every port

	Prefix netip.Prefix `json:"-"`
}

// AllowPort is a protocol ("tcp", "udp", "sctp", "icmp" or "" for any) and
// a port (0 for any).
type AllowPort struct {
	Protocol string `json:"protocol,omitempty"`
	Port     uint16 `json:"port,omitempty"`
}

// ProtoNumber is the IP protocol number of p ("" is 0, any).
func (p AllowPort) ProtoNumber() uint8 {
	return map[string]uint8{"": 0, "icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}[p.Protocol]
}

// Tenancy configures tenant isolation.
type Tenancy struct {
	// Enabled defaults to true: pods of different tenants cannot talk.
	Enabled *bool `json:"enabled,omitempty"`
	// Registry persists tenant -> index (default tenant.DefaultRegistry).
	Registry string `json:"registry,omitempty"`
	// RegistryMode says who assigns indexes: "local" (default) lets the
	// plugin assign them in Registry on first use; "cluster" leaves that to
	// berth-netd --kubernetes, which assigns them cluster-wide, and the
	// plugin only reads Registry (a tenant or namespace not there yet
	// fails ADD with code 11, try again later).
	RegistryMode string `json:"registryMode,omitempty"`
	// MappingFile maps namespaces to tenants (berth-netd maintains it).
	MappingFile string `json:"mappingFile,omitempty"`
	// Allow lists destinations reachable from every tenant (cluster DNS).
	Allow []AllowEntry `json:"allow,omitempty"`
	// VNIBase: in vxlan mode tenant i uses VNI vniBase+i (default "vni").
	VNIBase uint32 `json:"vniBase,omitempty"`
}

// On reports whether isolation is enabled.
func (t Tenancy) On() bool { return t.Enabled == nil || *t.Enabled }

// RuntimeConfig is what the runtime fills in for declared capabilities.
type RuntimeConfig struct {
	Bandwidth      *Bandwidth        `json:"bandwidth,omitempty"`
	Tenant         string            `json:"tenant,omitempty"`
	PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
}

// Args are the CNI_ARGS keys berth reads.
type Args struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive
	BERTH_TENANT      types.UnmarshallableString //nolint:revive
}

// DefaultBPFPinDir is where the dataplane's maps are pinned.
const DefaultBPFPinDir = "/sys/fs/bpf/berth"

func (c *NetConf) validateDataplane() error {
	if c.BPFPinDir == "" {
		c.BPFPinDir = DefaultBPFPinDir
	}
	if !strings.HasPrefix(c.BPFPinDir, "/sys/fs/bpf/") {
		return invalid("bpfPinDir", "%q is not under /sys/fs/bpf/", c.BPFPinDir)
	}
	switch c.AttachMode {
	case "":
		c.AttachMode = "cls_bpf"
	case "cls_bpf", "tcx":
	default:
		return invalid("attachMode", "unknown mode %q (want cls_bpf or tcx)", c.AttachMode)
	}
	for _, bw := range []struct {
		field string
		b     *Bandwidth
	}{{"bandwidth", c.Bandwidth}, {"runtimeConfig.bandwidth", c.RuntimeConfig.Bandwidth}} {
		if bw.b == nil {
			continue
		}
		// Rates below one full frame per second cannot be shaped
		// meaningfully; above 1 Tbit/s is a units mistake.
		for _, r := range []struct {
			name string
			v    uint64
		}{{"ingressRate", bw.b.IngressRate}, {"egressRate", bw.b.EgressRate}} {
			if r.v != 0 && (r.v < 8*1514 || r.v > 1e12) {
				return invalid(bw.field+"."+r.name, "%d bit/s is out of range %d-%d", r.v, 8*1514, uint64(1e12))
			}
		}
	}
	t := &c.Tenancy
	if t.Registry == "" {
		t.Registry = tenant.DefaultRegistry
	}
	switch t.RegistryMode {
	case "":
		t.RegistryMode = tenant.ModeLocal
	case tenant.ModeLocal, tenant.ModeCluster:
	default:
		return invalid("tenancy.registryMode", "unknown mode %q (want %s or %s)", t.RegistryMode, tenant.ModeLocal, tenant.ModeCluster)
	}
	if t.VNIBase == 0 {
		t.VNIBase = c.VNI
		if t.VNIBase == 0 {
			t.VNIBase = DefaultVNI
		}
	}
	if uint64(t.VNIBase)+tenant.MaxTenants > maxVNI {
		return invalid("tenancy.vniBase", "%d leaves no room for %d tenants below %d", t.VNIBase, tenant.MaxTenants, maxVNI)
	}
	for i := range t.Allow {
		a := &t.Allow[i]
		p, err := netip.ParsePrefix(a.CIDR)
		if err != nil {
			return invalid(fmt.Sprintf("tenancy.allow[%d].cidr", i), "invalid CIDR %q", a.CIDR)
		}
		a.Prefix = p.Masked()
		if len(a.Ports) > 8 {
			return invalid(fmt.Sprintf("tenancy.allow[%d].ports", i), "at most 8 entries, got %d", len(a.Ports))
		}
		for j, pp := range a.Ports {
			switch pp.Protocol {
			case "", "tcp", "udp", "sctp", "icmp", "icmpv6":
			default:
				return invalid(fmt.Sprintf("tenancy.allow[%d].ports[%d].protocol", i, j), "unknown protocol %q", pp.Protocol)
			}
		}
	}
	return nil
}
