package overlay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// Peer is one node of the overlay as listed in the static peers file.
type Peer struct {
	NodeName   string `json:"nodeName"`
	UnderlayIP string `json:"underlayIP"`
	PodCIDR    string `json:"podCIDR"`
}

// peer is a validated Peer with its addresses parsed once, so the programming
// code never has to deal with parse errors half-way through a reconcile.
type peer struct {
	name     string
	underlay netip.Addr
	podCIDR  netip.Prefix
}

// gateway is the address that stands for the peer's pod CIDR on the overlay:
// the CIDR's network address. The peer puts it on its own VXLAN device, and
// every other node uses it as the next hop for the CIDR.
func (p peer) gateway() netip.Addr { return p.podCIDR.Addr() }

// LoadPeers reads and validates a peers file: a JSON list of Peer objects.
// Errors name the offending entry and field, e.g.
// `peers[2].podCIDR: invalid CIDR "x"`.
func LoadPeers(path string) ([]Peer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read peers file: %w", err)
	}
	peers, err := ParsePeers(data)
	if err != nil {
		return nil, fmt.Errorf("peers file %s: %w", path, err)
	}
	return peers, nil
}

// ParsePeers decodes and validates the JSON form of a peers list. An empty
// list is valid (a single-node cluster has no remote peers); JSON null, an
// empty document or trailing garbage are not, because those are far more
// likely to be a truncated or mangled file than an intent to drop every peer.
func ParsePeers(data []byte) ([]Peer, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty document, want a JSON list of peers")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var peers []Peer
	if err := dec.Decode(&peers); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("invalid JSON: unexpected data after the list of peers")
	}
	if peers == nil {
		return nil, errors.New("got null, want a JSON list of peers")
	}
	if _, err := validatePeers(peers); err != nil {
		return nil, err
	}
	return peers, nil
}

// validatePeers checks every field of every peer and cross-checks them for
// duplicates. Overlapping pod CIDRs are rejected as well: two routes for the
// same addresses would silently send one node's pods to another node.
func validatePeers(peers []Peer) ([]peer, error) {
	out := make([]peer, 0, len(peers))
	byName := make(map[string]int, len(peers))
	byUnderlay := make(map[netip.Addr]int, len(peers))
	for i, p := range peers {
		field := func(name string) string { return fmt.Sprintf("peers[%d].%s", i, name) }

		name := strings.TrimSpace(p.NodeName)
		if name == "" {
			return nil, fmt.Errorf("%s: missing", field("nodeName"))
		}
		if name != p.NodeName {
			return nil, fmt.Errorf("%s: %q has leading or trailing whitespace", field("nodeName"), p.NodeName)
		}
		if j, dup := byName[name]; dup {
			return nil, fmt.Errorf("%s: duplicate %q (also peers[%d])", field("nodeName"), name, j)
		}
		byName[name] = i

		if p.UnderlayIP == "" {
			return nil, fmt.Errorf("%s: missing", field("underlayIP"))
		}
		underlay, err := netip.ParseAddr(p.UnderlayIP)
		if err != nil {
			return nil, fmt.Errorf("%s: invalid IP %q", field("underlayIP"), p.UnderlayIP)
		}
		// An IPv4-mapped IPv6 literal is the same VTEP as the plain IPv4
		// address; unmapping keeps the duplicate check and MACFor honest.
		underlay = underlay.Unmap()
		if underlay.Zone() != "" || underlay.IsUnspecified() || underlay.IsMulticast() || underlay.IsLoopback() {
			return nil, fmt.Errorf("%s: %q is not a usable unicast VTEP address", field("underlayIP"), p.UnderlayIP)
		}
		if j, dup := byUnderlay[underlay]; dup {
			return nil, fmt.Errorf("%s: duplicate %q (also peers[%d])", field("underlayIP"), p.UnderlayIP, j)
		}
		byUnderlay[underlay] = i

		if p.PodCIDR == "" {
			return nil, fmt.Errorf("%s: missing", field("podCIDR"))
		}
		cidr, err := netip.ParsePrefix(p.PodCIDR)
		if err != nil {
			return nil, fmt.Errorf("%s: invalid CIDR %q", field("podCIDR"), p.PodCIDR)
		}
		if cidr.Addr().Is4In6() {
			return nil, fmt.Errorf("%s: %q is an IPv4-mapped prefix, write it as IPv4", field("podCIDR"), p.PodCIDR)
		}
		// A host part in the CIDR is almost always a typo (198.18.64.0/16
		// for 198.18.64.0/24); guessing would route the wrong range.
		if cidr != cidr.Masked() {
			return nil, fmt.Errorf("%s: %q is not a network address (the network is %s)", field("podCIDR"), p.PodCIDR, cidr.Masked())
		}
		for j, q := range out {
			if q.podCIDR.Overlaps(cidr) {
				return nil, fmt.Errorf("%s: %s overlaps peers[%d].podCIDR %s", field("podCIDR"), cidr, j, q.podCIDR)
			}
		}
		out = append(out, peer{name: name, underlay: underlay, podCIDR: cidr})
	}
	return out, nil
}
