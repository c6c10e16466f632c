package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultDataDir is where allocations live when the config names no dataDir.
// It sits beside the upstream plugins' /var/lib/cni/networks but in its own
// directory, so host-local and berth can never read each other's files.
const DefaultDataDir = "/var/lib/cni/berth"

// TypeBerth is the ipam "type" value (besides the empty string) that selects
// this allocator.
const TypeBerth = "berth"

// Config is the "ipam" object of a berth network config when type is "" or
// "berth".
type Config struct {
	Type       string         `json:"type,omitempty"`
	Subnet     string         `json:"subnet"`
	RangeStart string         `json:"rangeStart,omitempty"`
	RangeEnd   string         `json:"rangeEnd,omitempty"`
	Ranges     []Range        `json:"ranges,omitempty"`
	Gateway    string         `json:"gateway,omitempty"`
	Routes     []*types.Route `json:"routes,omitempty"`
	Reserved   []string       `json:"reserved,omitempty"`
	DataDir    string         `json:"dataDir,omitempty"`
}

// Range is an inclusive address range inside Config.Subnet. An empty bound
// defaults to the first or last host address of the subnet.
type Range struct {
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
}

// Validate parses and checks the whole config and fills in the defaults for
// DataDir and Gateway. It is idempotent: a validated config validates to the
// same values again.
//
// Every error is a *types.Error with code types.ErrInvalidNetworkConfig whose
// message starts with the JSON path of the offending field, so an operator
// reading kubelet's event can find the line to fix without guessing.
func (c *Config) Validate() error {
	p, err := c.parse()
	if err != nil {
		return err
	}
	if c.Gateway == "" {
		c.Gateway = p.gateway.String()
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	return nil
}

// span is an inclusive run of addresses [lo, hi] of one family.
type span struct{ lo, hi netip.Addr }

// pool is the parsed form of a Config: what the allocator actually needs.
type pool struct {
	subnet  netip.Prefix // masked
	gateway netip.Addr
	// spans are the addresses that may be handed out, sorted and disjoint:
	// the configured ranges clipped to the subnet's host addresses, minus
	// the gateway and every reserved address. Keeping them as spans rather
	// than as a set keeps a /16 (or an IPv6 /64) as cheap as a /29.
	spans   []span
	size    *big.Int // number of addresses in spans; big because of IPv6
	desc    string   // names subnet (and ranges) in exhaustion messages
	dataDir string
}

func invalidf(format string, args ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, args...), "")
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// parse does all of Validate's work without modifying c, so that New can use
// it on a config it does not own.
func (c *Config) parse() (*pool, error) {
	if c.Type != "" && c.Type != TypeBerth {
		return nil, invalidf("ipam.type: unsupported IPAM type %q (this allocator handles %q or empty)", c.Type, TypeBerth)
	}

	if c.Subnet == "" {
		return nil, invalidf("ipam.subnet: required")
	}
	raw, err := netip.ParsePrefix(c.Subnet)
	if err != nil {
		return nil, invalidf("ipam.subnet: invalid CIDR %q", c.Subnet)
	}
	if raw.Addr().Is4In6() {
		// Such a subnet would be IPv6 on the wire while looking like IPv4
		// to the operator; refuse rather than guess which was meant.
		return nil, invalidf("ipam.subnet: IPv4-mapped IPv6 subnet %s is not supported, write it as plain IPv4", c.Subnet)
	}
	// Host bits are tolerated ("10.0.0.1/24" means 10.0.0.0/24), as
	// host-local does, because people often write the gateway that way.
	subnet := raw.Masked()
	is4 := subnet.Addr().Is4()
	// Require room for a gateway and at least one container: /31 and /32
	// (and the IPv6 equivalents) leave none once the network address,
	// broadcast and gateway are taken out.
	if (is4 && subnet.Bits() > 30) || (!is4 && subnet.Bits() > 126) {
		limit := 30
		if !is4 {
			limit = 126
		}
		return nil, invalidf("ipam.subnet: %s is too small, need a /%d or larger", subnet, limit)
	}
	firstHost := subnet.Addr().Next()
	lastHost := lastAddr(subnet)
	if is4 {
		lastHost = lastHost.Prev() // IPv4 broadcast
	}

	// addrIn parses an address that must belong to the subnet.
	addrIn := func(field, s string) (netip.Addr, error) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, invalidf("%s: invalid IP address %q", field, s)
		}
		if a.Zone() != "" {
			return netip.Addr{}, invalidf("%s: zone not allowed in %q", field, s)
		}
		if a.Is4() != is4 || a.Is4In6() {
			return netip.Addr{}, invalidf("%s: %s address %s does not match %s ipam.subnet %s",
				field, family(a), s, family(subnet.Addr()), subnet)
		}
		if !subnet.Contains(a) {
			return netip.Addr{}, invalidf("%s: %s is outside ipam.subnet %s", field, a, subnet)
		}
		return a, nil
	}

	// rangeSpan turns one configured range into a span clipped to the host
	// addresses. A bound on the network or broadcast address is accepted
	// and clipped, since "start at .0" is a natural way to say "from the
	// beginning"; the clipping guarantees those are never handed out.
	var rangeDesc []string
	rangeSpan := func(path, start, end string) (span, bool, error) {
		lo, hi := firstHost, lastHost
		var err error
		if start != "" {
			if lo, err = addrIn(path+"rangeStart", start); err != nil {
				return span{}, false, err
			}
		}
		if end != "" {
			if hi, err = addrIn(path+"rangeEnd", end); err != nil {
				return span{}, false, err
			}
		}
		if hi.Less(lo) {
			return span{}, false, invalidf("%srangeEnd: %s is before %srangeStart %s", path, hi, path, lo)
		}
		rangeDesc = append(rangeDesc, lo.String()+"-"+hi.String())
		if lo.Less(firstHost) {
			lo = firstHost
		}
		if lastHost.Less(hi) {
			hi = lastHost
		}
		return span{lo, hi}, !hi.Less(lo), nil
	}

	var ranges []span
	topLevel := c.RangeStart != "" || c.RangeEnd != ""
	if !topLevel && len(c.Ranges) == 0 {
		ranges = []span{{firstHost, lastHost}}
	} else {
		add := func(path, start, end string) error {
			s, ok, err := rangeSpan(path, start, end)
			if err != nil {
				return err
			}
			if ok {
				ranges = append(ranges, s)
			}
			return nil
		}
		if topLevel {
			if err := add("ipam.", c.RangeStart, c.RangeEnd); err != nil {
				return nil, err
			}
		}
		for i, r := range c.Ranges {
			if err := add(fmt.Sprintf("ipam.ranges[%d].", i), r.RangeStart, r.RangeEnd); err != nil {
				return nil, err
			}
		}
	}
	// Overlapping ranges are merged rather than rejected: the union is
	// clearly what was meant, and nothing can be handed out twice because
	// the address files, not the ranges, decide what is in use.
	spans := mergeSpans(ranges)

	gw := firstHost
	if c.Gateway != "" {
		if gw, err = addrIn("ipam.gateway", c.Gateway); err != nil {
			return nil, err
		}
		if gw == subnet.Addr() {
			return nil, invalidf("ipam.gateway: %s is the network address of ipam.subnet %s", gw, subnet)
		}
		if is4 && gw == lastAddr(subnet) {
			return nil, invalidf("ipam.gateway: %s is the broadcast address of ipam.subnet %s", gw, subnet)
		}
	}
	spans = subtractSpan(spans, span{gw, gw})

	for i, r := range c.Reserved {
		field := fmt.Sprintf("ipam.reserved[%d]", i)
		var p netip.Prefix
		if strings.Contains(r, "/") {
			if p, err = netip.ParsePrefix(r); err != nil {
				return nil, invalidf("%s: invalid IP or CIDR %q", field, r)
			}
		} else {
			a, err := netip.ParseAddr(r)
			if err != nil {
				return nil, invalidf("%s: invalid IP or CIDR %q", field, r)
			}
			if a.Zone() != "" {
				return nil, invalidf("%s: zone not allowed in %q", field, r)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4() != is4 || p.Addr().Is4In6() {
			return nil, invalidf("%s: %s entry %q does not match %s ipam.subnet %s",
				field, family(p.Addr()), r, family(subnet.Addr()), subnet)
		}
		// Entries outside the subnet are allowed and simply have no
		// effect, so one cluster-wide reserved list can be shared by
		// nodes with different subnets.
		p = p.Masked()
		spans = subtractSpan(spans, span{p.Addr(), lastAddr(p)})
	}

	desc := "ipam.subnet " + subnet.String()
	if rangeDesc != nil {
		desc += " ranges " + strings.Join(rangeDesc, ",")
	}
	if len(spans) == 0 {
		return nil, invalidf("%s: no allocatable address left after excluding the gateway, ipam.reserved and addresses outside the ranges", desc)
	}

	for i, r := range c.Routes {
		field := fmt.Sprintf("ipam.routes[%d]", i)
		if r == nil {
			return nil, invalidf("%s: null route", field)
		}
		if r.Dst.IP == nil {
			return nil, invalidf("%s.dst: required", field)
		}
		if _, bits := r.Dst.Mask.Size(); bits == 0 {
			return nil, invalidf("%s.dst: invalid mask in %s", field, r.Dst.String())
		}
		// Routes are installed on the interface that only has an address
		// of the subnet's family, so a route of the other family could
		// never be used; catching it here beats a netlink error at ADD.
		if (r.Dst.IP.To4() != nil) != is4 {
			return nil, invalidf("%s.dst: %s does not match %s ipam.subnet %s", field, r.Dst.String(), family(subnet.Addr()), subnet)
		}
		if r.GW != nil && (r.GW.To4() != nil) != is4 {
			return nil, invalidf("%s.gw: %s does not match %s ipam.subnet %s", field, r.GW, family(subnet.Addr()), subnet)
		}
	}

	dataDir := c.DataDir
	if dataDir == "" {
		dataDir = DefaultDataDir
	} else if !filepath.IsAbs(dataDir) {
		// A relative path would resolve against whatever working
		// directory the container runtime happens to start us in.
		return nil, invalidf("ipam.dataDir: must be an absolute path, got %q", dataDir)
	}

	size := new(big.Int)
	one := big.NewInt(1)
	for _, s := range spans {
		n := new(big.Int).Sub(addrInt(s.hi), addrInt(s.lo))
		size.Add(size, n.Add(n, one))
	}

	return &pool{
		subnet:  subnet,
		gateway: gw,
		spans:   spans,
		size:    size,
		desc:    desc,
		dataDir: filepath.Clean(dataDir),
	}, nil
}

// lastAddr returns the highest address of p (the IPv4 broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		switch {
		case (i+1)*8 <= bits:
		case i*8 >= bits:
			b[i] = 0xff
		default:
			b[i] |= byte(0xff >> (bits - i*8))
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

// mergeSpans sorts spans and merges overlapping or adjacent ones.
func mergeSpans(in []span) []span {
	s := slices.Clone(in)
	slices.SortFunc(s, func(x, y span) int { return x.lo.Compare(y.lo) })
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 {
			last := &out[n-1]
			// Adjacent when last.hi+1 == x.lo; Next of the family's
			// maximum is invalid, which can only happen if last already
			// reaches the end and so covers x.
			if next := last.hi.Next(); !next.IsValid() || !next.Less(x.lo) {
				if last.hi.Less(x.hi) {
					last.hi = x.hi
				}
				continue
			}
		}
		out = append(out, x)
	}
	return out
}

// subtractSpan removes ex from every span.
func subtractSpan(spans []span, ex span) []span {
	var out []span
	for _, s := range spans {
		if ex.hi.Less(s.lo) || s.hi.Less(ex.lo) {
			out = append(out, s)
			continue
		}
		if s.lo.Less(ex.lo) {
			out = append(out, span{s.lo, ex.lo.Prev()})
		}
		if ex.hi.Less(s.hi) {
			out = append(out, span{ex.hi.Next(), s.hi})
		}
	}
	return out
}

// contains reports whether a may be handed out by this pool.
func (p *pool) contains(a netip.Addr) bool {
	if !p.subnet.Contains(a) {
		return false
	}
	for _, s := range p.spans {
		if !a.Less(s.lo) && !s.hi.Less(a) {
			return true
		}
	}
	return false
}

// after returns the next allocatable address after a, wrapping around to the
// start of the pool. An a that is not of the subnet (no or a foreign
// last_reserved_ip) starts at the beginning.
func (p *pool) after(a netip.Addr) netip.Addr {
	if p.subnet.Contains(a) {
		for _, s := range p.spans {
			if a.Less(s.lo) {
				return s.lo
			}
			if a.Less(s.hi) {
				return a.Next()
			}
		}
	}
	return p.spans[0].lo
}
