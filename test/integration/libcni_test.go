package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
)

// This file drives berth through libcni, the library containerd (go-cni)
// and CRI-O (ocicni) embed: configuration loaded from a .conflist file,
// results cached by the library, CHECK/DEL fed the cached prevResult, GC
// and STATUS as CNI 1.1 runtimes issue them.

// rtInNetNS runs f with the calling OS thread inside n. libcni forks the
// plugin from that thread, and a child inherits its thread's network
// namespace, so the plugin sees n as "the host" — exactly as it sees the
// real host namespace when a runtime runs it.
func rtInNetNS(n netNS, f func() error) error {
	return ns.WithNetNSPath(n.Path(), func(ns.NetNS) error { return f() })
}

// rtConflist writes a one-plugin conflist named name into dir and returns
// its path.
func rtConflist(t *testing.T, dir, file, version, name string, plugin map[string]any) string {
	t.Helper()
	list := map[string]any{
		"cniVersion": version,
		"name":       name,
		"plugins":    []any{plugin},
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rtBerthPlugin is the plugin entry of a berth macvlan bridge network.
func rtBerthPlugin(t *testing.T, master, subnet, dataDir string) map[string]any {
	t.Helper()
	return map[string]any{
		// Private dataplane state, as netConf gives every other test.
		"bpfPinDir":   testPinDir(t),
		"tenancy":     map[string]any{"registry": filepath.Join(t.TempDir(), "tenants.json")},
		"type":        "berth",
		"mode":        "macvlan",
		"macvlanMode": "bridge",
		"master":      master,
		"ipam":        map[string]any{"subnet": subnet, "dataDir": dataDir},
	}
}

// rtOwner returns the container ID recorded in the built-in allocator's
// file for addr.
func rtOwner(t *testing.T, dataDir, network, addr string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, network, addr))
	if err != nil {
		t.Fatalf("allocation file of %s: %v", addr, err)
	}
	var att struct {
		ContainerID string `json:"containerID"`
		IfName      string `json:"ifname"`
	}
	if err := json.Unmarshal(data, &att); err != nil {
		t.Fatalf("allocation file of %s: %v: %q", addr, err, data)
	}
	return att.ContainerID
}

// rtMentions lists the files under dataDir that still mention any of ids:
// after DEL nothing of the store — address file, index, whatever it keeps —
// may still refer to the attachment.
func rtMentions(t *testing.T, dataDir string, ids ...string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if strings.Contains(string(data), id) || strings.Contains(d.Name(), id) {
				found = append(found, path)
				break
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return found
}

// rtPodAddrs lists "addr/len" of the IPv4 addresses on ifName in n.
func rtPodAddrs(t *testing.T, n netNS, ifName string) []string {
	t.Helper()
	var out []struct {
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(n.ip(t, "-j", "addr", "show", "dev", ifName)), &out); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, l := range out {
		for _, a := range l.AddrInfo {
			if a.Family == "inet" {
				addrs = append(addrs, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
			}
		}
	}
	return addrs
}

// rtVerifyAttached asserts that res describes ifName in sandbox with one
// address from subnet, and that the address really is on the link.
func rtVerifyAttached(t *testing.T, res *current.Result, p netNS, ifName, subnet string) {
	t.Helper()
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs, want 1: %+v", len(res.IPs), res)
	}
	addr, ok := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if !ok || !netip.MustParsePrefix(subnet).Contains(addr) {
		t.Errorf("address %s is not in %s", res.IPs[0].Address.String(), subnet)
	}
	found := false
	for _, i := range res.Interfaces {
		if i.Name == ifName && i.Sandbox == p.Path() {
			found = true
		}
	}
	if !found {
		t.Errorf("result has no interface %s in sandbox %s: %+v", ifName, p.Path(), res.Interfaces)
	}
	if got, want := rtPodAddrs(t, p, ifName), res.IPs[0].Address.String(); !slices.Contains(got, want) {
		t.Errorf("%s in %s has addresses %v, want %s", ifName, p.Name, got, want)
	}
}

// TestLibcniLifecycle runs the whole CNI 1.1 lifecycle through libcni:
// ADD two pods, ping, CHECK, STATUS, GC keeping pod 1 only, DEL both.
//
// GC is exercised twice: with the runtime's result cache intact (libcni
// itself DELs the stale attachment it cached, then sends the plugin GC)
// and with the cache lost (a wiped /var/lib/cni, a reinstalled runtime),
// where only berth's own GC can release pod 2's address.
func TestLibcniLifecycle(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name      string
		cacheLost bool
	}{
		{name: "cache intact"},
		{name: "cache lost", cacheLost: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			n := newMacvlanNode(t)
			nodeLinks := n.links(t)
			const network, subnet = "bti-libcni", "198.18.20.0/24"
			dataDir, confDir := t.TempDir(), t.TempDir()
			rtConflist(t, confDir, "10-berth.conflist", "1.1.0", network, rtBerthPlugin(t, n.Uplink, subnet, dataDir))

			// Discover and load the file as a runtime does.
			files, err := libcni.ConfFiles(confDir, []string{".conf", ".conflist", ".json"})
			if err != nil || len(files) != 1 {
				t.Fatalf("ConfFiles: %v %v", files, err)
			}
			list, err := libcni.ConfListFromFile(files[0])
			if err != nil {
				t.Fatalf("ConfListFromFile: %v", err)
			}
			if list.Name != network || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "berth" {
				t.Fatalf("loaded conflist %q %q with %d plugins", list.Name, list.CNIVersion, len(list.Plugins))
			}

			// go-cni and ocicni both give libcni their own cache directory;
			// a temp one keeps the test out of /var/lib/cni.
			path := []string{binDir, "/usr/lib/cni"}
			cacheDir := t.TempDir()
			cninet := libcni.NewCNIConfigWithCacheDir(path, cacheDir, nil)

			type lpod struct {
				ns  netNS
				rt  *libcni.RuntimeConf
				res *current.Result
			}
			var pods []lpod
			for i := 0; i < 2; i++ {
				p := lpod{ns: newNS(t, "p")}
				p.rt = &libcni.RuntimeConf{
					ContainerID: "ctr-" + randHex(8),
					NetNS:       p.ns.Path(),
					IfName:      "eth0",
					Args: [][2]string{
						{"IgnoreUnknown", "1"},
						{"K8S_POD_NAMESPACE", "bti"},
						{"K8S_POD_NAME", fmt.Sprintf("pod-%d", i)},
					},
				}
				var r types.Result
				err := rtInNetNS(n.netNS, func() error {
					var err error
					r, err = cninet.AddNetworkList(ctx, list, p.rt)
					return err
				})
				if err != nil {
					t.Fatalf("AddNetworkList pod %d: %v", i, err)
				}
				// Best effort, for a test that fails half-way; a second
				// DEL is a no-op.
				t.Cleanup(func() {
					_ = rtInNetNS(n.netNS, func() error { return cninet.DelNetworkList(ctx, list, p.rt) })
				})
				if r.Version() != "1.1.0" {
					t.Errorf("result version %s, want 1.1.0", r.Version())
				}
				p.res, err = current.NewResultFromResult(r)
				if err != nil {
					t.Fatal(err)
				}
				rtVerifyAttached(t, p.res, p.ns, "eth0", subnet)
				if got := rtOwner(t, dataDir, network, p.res.IPs[0].Address.IP.String()); got != p.rt.ContainerID {
					t.Errorf("address %s recorded for %q, want %q", p.res.IPs[0].Address.IP, got, p.rt.ContainerID)
				}
				cached, err := cninet.GetNetworkListCachedResult(list, p.rt)
				if err != nil || cached == nil {
					t.Fatalf("libcni cached no result for pod %d: %v", i, err)
				}
				if c, _ := current.NewResultFromResult(cached); c == nil || !c.IPs[0].Address.IP.Equal(p.res.IPs[0].Address.IP) {
					t.Errorf("cached result %v differs from ADD result %v", cached, p.res)
				}
				pods = append(pods, p)
			}
			ip0, ip1 := pods[0].res.IPs[0].Address.IP.String(), pods[1].res.IPs[0].Address.IP.String()
			if ip0 == ip1 {
				t.Fatalf("both pods got %s", ip0)
			}
			if err := pods[0].ns.ping(ip1); err != nil {
				t.Error(err)
			}
			if err := pods[1].ns.ping(ip0); err != nil {
				t.Error(err)
			}
			for i, p := range pods {
				if err := rtInNetNS(n.netNS, func() error { return cninet.CheckNetworkList(ctx, list, p.rt) }); err != nil {
					t.Errorf("CheckNetworkList pod %d: %v", i, err)
				}
			}
			if err := rtInNetNS(n.netNS, func() error { return cninet.GetStatusNetworkList(ctx, list) }); err != nil {
				t.Errorf("GetStatusNetworkList: %v", err)
			}
			if got := allocations(t, dataDir, network); !slices.Equal(got, []string{ip0, ip1}) && !slices.Equal(got, []string{ip1, ip0}) {
				t.Errorf("allocations before GC %v, want %s and %s", got, ip0, ip1)
			}

			// GC: only pod 1 is still valid.
			gcnet := cninet
			if tc.cacheLost {
				gcnet = libcni.NewCNIConfigWithCacheDir(path, t.TempDir(), nil)
			}
			gcArgs := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: pods[0].rt.ContainerID, IfName: "eth0"}}}
			if err := rtInNetNS(n.netNS, func() error { return gcnet.GCNetworkList(ctx, list, gcArgs) }); err != nil {
				t.Fatalf("GCNetworkList: %v", err)
			}
			if got := allocations(t, dataDir, network); !slices.Equal(got, []string{ip0}) {
				t.Errorf("allocations after GC %v, want only pod 1's %s", got, ip0)
			}
			if got := rtMentions(t, dataDir, pods[1].rt.ContainerID); len(got) != 0 {
				t.Errorf("files still naming GC'd pod 2: %v", got)
			}
			if err := rtInNetNS(n.netNS, func() error { return cninet.CheckNetworkList(ctx, list, pods[0].rt) }); err != nil {
				t.Errorf("CheckNetworkList pod 1 after GC: %v", err)
			}
			err = rtInNetNS(n.netNS, func() error { return cninet.CheckNetworkList(ctx, list, pods[1].rt) })
			if err == nil {
				t.Error("CheckNetworkList passed for pod 2 after GC released it")
			}
			if tc.cacheLost {
				// Only the plugin's GC ran: pod 2 still has its link, but
				// its address is no longer allocated to it.
				if err != nil && !strings.Contains(err.Error(), "allocated") {
					t.Errorf("CHECK of GC'd pod 2 failed for another reason: %v", err)
				}
			} else {
				// libcni DELed pod 2 from its cache before the plugin GC.
				if got := pods[1].ns.links(t); !slices.Equal(got, []string{"lo"}) {
					t.Errorf("pod 2 links after GC: %v", got)
				}
				if r, _ := cninet.GetNetworkListCachedResult(list, pods[1].rt); r != nil {
					t.Errorf("pod 2 still cached after GC: %v", r)
				}
			}

			for i, p := range pods {
				if err := rtInNetNS(n.netNS, func() error { return cninet.DelNetworkList(ctx, list, p.rt) }); err != nil {
					t.Errorf("DelNetworkList pod %d: %v", i, err)
				}
				if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
					t.Errorf("pod %d links after DEL: %v", i, got)
				}
				if r, _ := cninet.GetNetworkListCachedResult(list, p.rt); r != nil {
					t.Errorf("pod %d still cached after DEL", i)
				}
			}
			if got := allocations(t, dataDir, network); len(got) != 0 {
				t.Errorf("allocations left after DEL: %v", got)
			}
			if got := rtMentions(t, dataDir, pods[0].rt.ContainerID, pods[1].rt.ContainerID); len(got) != 0 {
				t.Errorf("files still naming the pods after DEL: %v", got)
			}
			if got := n.links(t); !slices.Equal(got, nodeLinks) {
				t.Errorf("node links changed: before %v after %v", nodeLinks, got)
			}
		})
	}
}

// TestLibcniStatusUnavailable: STATUS through libcni reports code 50 (not
// available) when ADD could not succeed, so kubelet marks the node's
// network not ready.
func TestLibcniStatusUnavailable(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		master  string
		dataDir string
		substr  string
	}{
		{name: "master missing", master: "btinomaster", dataDir: t.TempDir(), substr: "master"},
		{name: "dataDir unusable", master: n.Uplink, dataDir: notADir, substr: "dataDir"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			confDir := t.TempDir()
			file := rtConflist(t, confDir, "10-berth.conflist", "1.1.0", "bti-status",
				rtBerthPlugin(t, tc.master, "198.18.20.0/24", tc.dataDir))
			list, err := libcni.ConfListFromFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cninet := libcni.NewCNIConfigWithCacheDir([]string{binDir, "/usr/lib/cni"}, t.TempDir(), nil)
			err = rtInNetNS(n.netNS, func() error { return cninet.GetStatusNetworkList(context.Background(), list) })
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("GetStatusNetworkList = %v, want a CNI error", err)
			}
			if te.Code != 50 {
				t.Errorf("code %d (%s), want 50", te.Code, te.Error())
			}
			if !strings.Contains(te.Msg, tc.substr) {
				t.Errorf("message %q does not name %s", te.Msg, tc.substr)
			}
		})
	}
}
