// Package config parses and validates berth-cni network configurations.
//
// Every validation error is a *types.Error carrying the CNI spec's error code
// and a message that starts with the JSON path of the offending field, so an
// operator reading kubelet's event ("ipam.subnet: invalid CIDR ...") knows
// exactly which line of the conflist to fix.
package config

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berthdev/berth/cni/ipam"
)

// Modes of attaching a pod to the network.
const (
	ModeMacvlan = "macvlan"
	ModeIPvlan  = "ipvlan"
	ModeVXLAN   = "vxlan"
)

// Defaults documented in docs/cni-config.md.
const (
	DefaultMacvlanMode = "bridge"
	DefaultIPvlanMode  = "l2"
	DefaultVNI         = 1
	DefaultVXLANPort   = 4789
	// VXLANOverhead is the outer Ethernet+IPv4+UDP+VXLAN header size that a
	// VXLAN pod's MTU must leave room for.
	VXLANOverhead = 50
	maxVNI        = 1<<24 - 1
)

// CNI 1.1 STATUS codes, which libcni v1.3 does not name yet.
const (
	// ErrPluginNotAvailable: the plugin cannot serve ADD right now.
	ErrPluginNotAvailable uint = 50
	// ErrLimitedConnectivity: pods can be added but some destinations are
	// unreachable.
	ErrLimitedConnectivity uint = 51
)

// Plugin-specific CNI error codes (the spec reserves 100+ for plugins).
const (
	// ErrCodeKernelUnsupported: the running kernel lacks a feature the
	// configuration needs (for example ipvlan).
	ErrCodeKernelUnsupported = 100
	// ErrCodeLinkSetup: creating or configuring a link failed.
	ErrCodeLinkSetup = 101
	// ErrCodeExhausted mirrors ipam.ErrCodeExhausted.
	ErrCodeExhausted = ipam.ErrCodeExhausted
)

// SupportedVersions is every CNI spec version berth-cni speaks.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// NetConf is a berth network configuration (one plugin entry of a conflist).
type NetConf struct {
	types.PluginConf

	// Mode is macvlan (default), ipvlan or vxlan.
	Mode string `json:"mode,omitempty"`
	// Master is the parent link for macvlan/ipvlan and the underlay link for
	// vxlan. Empty means the link carrying the IPv4 default route.
	Master      string `json:"master,omitempty"`
	MacvlanMode string `json:"macvlanMode,omitempty"`
	IPvlanMode  string `json:"ipvlanMode,omitempty"`
	// MTU of the pod interface; 0 means the master's MTU (less VXLANOverhead
	// in vxlan mode).
	MTU int `json:"mtu,omitempty"`

	// VXLAN mode.
	VNI        uint32 `json:"vni,omitempty"`
	VXLANPort  int    `json:"vxlanPort,omitempty"`
	PeersFile  string `json:"peersFile,omitempty"`
	NodeName   string `json:"nodeName,omitempty"`
	UnderlayIP string `json:"underlayIP,omitempty"`
	// LockDir holds the overlay lock files (default /run/berth).
	LockDir string `json:"lockDir,omitempty"`

	// LogFile, when set, receives the plugin's structured logs (runtimes
	// discard a plugin's stderr on success, so a file is the only way to see
	// what happened on a node).
	LogFile  string `json:"logFile,omitempty"`
	LogLevel string `json:"logLevel,omitempty"`

	// Bandwidth is the network's default shaping; a pod's runtimeConfig
	// bandwidth (from its annotations) overrides it.
	Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
	// Tenancy configures tenant isolation (on by default).
	Tenancy Tenancy `json:"tenancy,omitempty"`
	// BPFPinDir holds the dataplane's pinned maps.
	BPFPinDir string `json:"bpfPinDir,omitempty"`
	// AttachMode is how tc programs are attached: "cls_bpf" (default) or
	// "tcx"; see docs/dataplane.md for the measured trade-off.
	AttachMode    string        `json:"attachMode,omitempty"`
	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`

	// RawIPAM shadows PluginConf.IPAM (json picks the shallower field). It
	// is decoded into IPAM only for the built-in allocator: a delegated
	// plugin's keys (host-local's nested "ranges", say) are its own business.
	RawIPAM json.RawMessage `json:"ipam,omitempty"`
	IPAM    *ipam.Config    `json:"-"`

	// Parsed forms filled by Parse.
	UnderlayAddr netip.Addr `json:"-"`
}

// EffectiveBandwidth is the pod's shaping: runtimeConfig, else the
// network default.
func (c *NetConf) EffectiveBandwidth() *Bandwidth {
	if c.RuntimeConfig.Bandwidth.Shaped() {
		return c.RuntimeConfig.Bandwidth
	}
	if c.Bandwidth.Shaped() {
		return c.Bandwidth
	}
	return nil
}

// BuiltinIPAM reports whether addresses come from berth's own allocator
// rather than a delegated IPAM plugin.
func (c *NetConf) BuiltinIPAM() bool {
	return c.IPAM == nil || c.IPAM.Type == "" || c.IPAM.Type == "berth"
}

// invalid returns a code-7 error whose message names the field.
func invalid(field, format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, field+": "+fmt.Sprintf(format, a...), "")
}

// Parse decodes stdin, fills defaults and validates. It never touches the
// kernel; checks that need the host (does the master exist?) happen when the
// verb runs.
func Parse(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to decode network configuration", err.Error())
	}
	if len(conf.RawIPAM) > 0 && string(conf.RawIPAM) != "null" {
		conf.IPAM = &ipam.Config{}
		var typ struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(conf.RawIPAM, &typ); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "ipam: failed to decode", err.Error())
		}
		conf.IPAM.Type = typ.Type
		if conf.BuiltinIPAM() {
			if err := json.Unmarshal(conf.RawIPAM, conf.IPAM); err != nil {
				return nil, types.NewError(types.ErrDecodingFailure, "ipam: failed to decode", err.Error())
			}
		}
	}
	if err := conf.validate(); err != nil {
		return nil, err
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
		}
	}
	return conf, nil
}

func (c *NetConf) validate() error {
	if c.CNIVersion == "" {
		// Spec 0.1.0 had no version field; libcni fills it, so an empty one
		// here is a hand-written config we can still parse.
		c.CNIVersion = "0.1.0"
	}
	if !supported(c.CNIVersion) {
		return types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("cniVersion: %q is not supported (supported: %s)", c.CNIVersion, strings.Join(SupportedVersions.SupportedVersions(), ", ")), "")
	}
	if c.Name == "" {
		return invalid("name", "is required")
	}
	if c.Mode == "" {
		c.Mode = ModeMacvlan
	}
	switch c.Mode {
	case ModeMacvlan:
		if c.MacvlanMode == "" {
			c.MacvlanMode = DefaultMacvlanMode
		}
		switch c.MacvlanMode {
		case "bridge", "private", "vepa", "passthru":
		default:
			return invalid("macvlanMode", "unknown mode %q (want bridge, private, vepa or passthru)", c.MacvlanMode)
		}
	case ModeIPvlan:
		if c.IPvlanMode == "" {
			c.IPvlanMode = DefaultIPvlanMode
		}
		switch c.IPvlanMode {
		case "l2", "l3", "l3s":
		default:
			return invalid("ipvlanMode", "unknown mode %q (want l2, l3 or l3s)", c.IPvlanMode)
		}
	case ModeVXLAN:
		if c.VNI == 0 {
			c.VNI = DefaultVNI
		}
		if c.VNI > maxVNI {
			return invalid("vni", "%d is out of range 1-%d", c.VNI, maxVNI)
		}
		if c.VXLANPort == 0 {
			c.VXLANPort = DefaultVXLANPort
		}
		if c.VXLANPort < 1 || c.VXLANPort > 65535 {
			return invalid("vxlanPort", "%d is out of range 1-65535", c.VXLANPort)
		}
		if c.UnderlayIP != "" {
			a, err := netip.ParseAddr(c.UnderlayIP)
			if err != nil {
				return invalid("underlayIP", "invalid IP address %q", c.UnderlayIP)
			}
			c.UnderlayAddr = a
		}
		if !c.BuiltinIPAM() {
			// The node's pod CIDR (the VXLAN device address and what peers
			// route here) comes from the built-in allocator's subnet.
			return invalid("ipam.type", "vxlan mode needs the built-in IPAM (type \"berth\"), got %q", c.IPAM.Type)
		}
	default:
		return invalid("mode", "unknown mode %q (want macvlan, ipvlan or vxlan)", c.Mode)
	}
	if c.Master != "" && (len(c.Master) > 15 || strings.ContainsAny(c.Master, "/ \x00")) {
		return invalid("master", "%q is not a valid interface name", c.Master)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return invalid("mtu", "%d is out of range 68-65535", c.MTU)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return invalid("logLevel", "unknown level %q (want debug, info, warn or error)", c.LogLevel)
	}
	if err := c.validateDataplane(); err != nil {
		return err
	}
	if c.BuiltinIPAM() {
		if c.IPAM == nil {
			return invalid("ipam", "is required (at least ipam.subnet)")
		}
		if err := c.IPAM.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func supported(v string) bool {
	for _, s := range SupportedVersions.SupportedVersions() {
		if s == v {
			return true
		}
	}
	return false
}
