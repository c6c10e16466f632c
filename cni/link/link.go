// Package link creates and removes the pod-side links of each berth mode:
// macvlan and ipvlan sub-interfaces of a master, and the routed veth pairs of
// vxlan mode. Functions run in the caller's (host) network namespace unless
// they say otherwise; container-side work happens inside netns.Do.
package link

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HostVethPrefix names every host-side veth berth creates, so operators and
// GC can tell them apart from other links.
const HostVethPrefix = "bth"

// HostVethName is deterministic in (network, containerID, ifName) so that DEL
// can find the host end even after the pod's netns is gone, and two networks
// attaching the same container never collide.
func HostVethName(network, containerID, ifName string) string {
	h := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return HostVethPrefix + hex.EncodeToString(h[:])[:12]
}

// Alias is stored on host-side links so GC can map a link back to its
// attachment without any state file: "berth:<network>:<containerID>:<ifName>".
func Alias(network, containerID, ifName string) string {
	return strings.Join([]string{"berth", network, containerID, ifName}, ":")
}

// ParseAlias is the inverse of Alias; ok is false for links berth did not
// create. containerID and network names cannot contain ':' in practice
// (runtimes use hex IDs), but the ifName is taken as the last field and the
// network as the second so an odd network name still round-trips.
func ParseAlias(alias string) (network, containerID, ifName string, ok bool) {
	if !strings.HasPrefix(alias, "berth:") {
		return "", "", "", false
	}
	rest := strings.TrimPrefix(alias, "berth:")
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return "", "", "", false
	}
	ifName = rest[i+1:]
	rest = rest[:i]
	j := strings.LastIndexByte(rest, ':')
	if j < 0 {
		return "", "", "", false
	}
	return rest[:j], rest[j+1:], ifName, true
}

// ErrKernelUnsupported marks a link type the running kernel cannot create.
var ErrKernelUnsupported = errors.New("kernel does not support this link type")

// classifyAddErr turns the kernel's answer to RTM_NEWLINK into something an
// operator can act on. A kernel built without a link driver answers
// EOPNOTSUPP ("Unknown device type") when modules cannot be loaded.
func classifyAddErr(kind string, err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) ||
		strings.Contains(err.Error(), "Unknown device type") ||
		strings.Contains(err.Error(), "not supported") {
		return fmt.Errorf("%w: cannot create %s link (kernel lacks CONFIG_%s support): %v",
			ErrKernelUnsupported, kind, strings.ToUpper(kind), err)
	}
	return fmt.Errorf("create %s link: %w", kind, err)
}

// ByName is netlink.LinkByName with a not-found that errors.Is can test.
func ByName(name string) (netlink.Link, error) {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("link %q: %w", name, ErrNotFound)
		}
		return nil, err
	}
	return l, nil
}

// ErrNotFound is returned by ByName when no such link exists.
var ErrNotFound = errors.New("not found")

// DeleteByName removes a link and treats "already gone" as success, because
// DEL must be idempotent.
func DeleteByName(name string) error {
	l, err := ByName(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}
