package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// modeSetup gives a node and a configuration for each mode under test.
type modeSetup struct {
	mode  string
	setup func(t *testing.T) (node, []byte)
}

func modes() []modeSetup {
	return []modeSetup{
		{"macvlan", func(t *testing.T) (node, []byte) {
			n := newMacvlanNode(t)
			return n, netConf(t, "1.1.0", "bti-cyc", "macvlan", n.Uplink, "198.18.12.0/24", nil)
		}},
		{"vxlan", func(t *testing.T) (node, []byte) {
			a, b := newVXLANPair(t)
			ca, _ := vxlanConfs(t, a, b, "1.1.0")
			ca = setJSON(t, ca, "name", "bti-cyc")
			// Warm up the node-level VXLAN device so the link diff below
			// only sees per-pod objects.
			p := a.add(t, ca)
			a.del(t, ca, p)
			return a, ca
		}},
		{"ipvlan", func(t *testing.T) (node, []byte) {
			n := newMacvlanNode(t)
			skipWithoutIPvlan(t, n)
			return n, netConf(t, "1.1.0", "bti-cyc", "ipvlan", n.Uplink, "198.18.12.0/24", nil)
		}},
	}
}

// dataFiles lists every file under the network's IPAM directory,
// recursively and including bookkeeping, so temp-file and index leaks show.
func dataFiles(t *testing.T, conf []byte, name string) []string {
	t.Helper()
	root := filepath.Join(dataDirOf(t, conf), name)
	var out []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// hostRoutes lists a node's /32 routes (vxlan pods leave one each).
func hostRoutes(t *testing.T, n node) string {
	return strings.TrimSpace(n.ip(t, "route", "show", "scope", "link", "proto", "boot"))
}

// TestAddDelCycles runs 200 ADD/DEL cycles and requires that nothing
// accumulates: links, routes, addresses, allocation or temp files.
func TestAddDelCycles(t *testing.T) {
	requireRoot(t)
	const cycles = 200
	for _, m := range modes() {
		t.Run(m.mode, func(t *testing.T) {
			n, conf := m.setup(t)
			podNS := newNS(t, "c")
			linksBefore, routesBefore := n.links(t), hostRoutes(t, n)
			filesBefore := dataFiles(t, conf, "bti-cyc")
			defer func() {
				// Besides no temp files, no per-attachment record may outlive
				// its DEL (indexes included): only fixed bookkeeping remains.
				if after := dataFiles(t, conf, "bti-cyc"); len(after) > len(filesBefore)+3 {
					t.Errorf("IPAM dir grew from %v to %v", filesBefore, after)
				}
			}()
			seen := map[string]bool{}
			for i := 0; i < cycles; i++ {
				id := fmt.Sprintf("cycle-%d", i)
				raw, err := n.invoke(cniCall{Command: "ADD", ContainerID: id, Netns: podNS.Path(), IfName: "eth0", Conf: conf})
				if err != nil {
					t.Fatalf("cycle %d ADD: %v", i, err)
				}
				seen[parseResult(t, raw).IPs[0].Address.IP.String()] = true
				if _, err := n.invoke(cniCall{Command: "DEL", ContainerID: id, Netns: podNS.Path(), IfName: "eth0", Conf: conf}); err != nil {
					t.Fatalf("cycle %d DEL: %v", i, err)
				}
			}
			if got := podNS.links(t); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("pod links after %d cycles: %v", cycles, got)
			}
			if got := n.links(t); !slices.Equal(got, linksBefore) {
				t.Errorf("node links: before %v after %v", linksBefore, got)
			}
			if got := hostRoutes(t, n); got != routesBefore {
				t.Errorf("node routes: before %q after %q", routesBefore, got)
			}
			if got := allocations(t, dataDirOf(t, conf), "bti-cyc"); len(got) != 0 {
				t.Errorf("allocations left: %v", got)
			}
			files := dataFiles(t, conf, "bti-cyc")
			for _, f := range files {
				if !slices.Contains(filesBefore, f) && strings.Contains(f, ".tmp") {
					t.Errorf("stray file in IPAM dir: %s", f)
				}
			}
			// Round-robin allocation walks the range instead of reusing the
			// just-freed address, which keeps stale neighbour caches from
			// sending traffic to a different pod.
			if len(seen) < 100 {
				t.Errorf("only %d distinct addresses over %d cycles", len(seen), cycles)
			}
		})
	}
}

// TestParallelAdds runs 20 ADDs at once (as kubelet does when a node
// starts many pods) and expects 20 distinct addresses, then 20 parallel DELs.
func TestParallelAdds(t *testing.T) {
	requireRoot(t)
	const n = 20
	for _, m := range modes() {
		t.Run(m.mode, func(t *testing.T) {
			nd, conf := m.setup(t)
			linksBefore := nd.links(t)
			pods := make([]pod, n)
			for i := range pods {
				pods[i] = pod{ns: newNS(t, "q"), id: fmt.Sprintf("par-%d", i), ifName: "eth0"}
			}
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range pods {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					pods[i].raw, errs[i] = nd.invoke(cniCall{Command: "ADD", ContainerID: pods[i].id, Netns: pods[i].ns.Path(), IfName: "eth0", Conf: conf})
				}(i)
			}
			wg.Wait()
			ips := map[string]string{}
			for i, p := range pods {
				if errs[i] != nil {
					t.Fatalf("ADD %s: %v", p.id, errs[i])
				}
				ip := parseResult(t, p.raw).IPs[0].Address.IP.String()
				if other, dup := ips[ip]; dup {
					t.Errorf("%s and %s both got %s", other, p.id, ip)
				}
				ips[ip] = p.id
			}
			if len(ips) != n {
				t.Errorf("%d distinct addresses, want %d", len(ips), n)
			}
			if got := allocations(t, dataDirOf(t, conf), "bti-cyc"); len(got) != n {
				t.Errorf("%d allocation files, want %d", len(got), n)
			}
			for i := range pods {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					_, errs[i] = nd.invoke(cniCall{Command: "DEL", ContainerID: pods[i].id, Netns: pods[i].ns.Path(), IfName: "eth0", Conf: conf})
				}(i)
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("DEL %s: %v", pods[i].id, err)
				}
			}
			if got := allocations(t, dataDirOf(t, conf), "bti-cyc"); len(got) != 0 {
				t.Errorf("allocations left: %v", got)
			}
			if got := nd.links(t); !slices.Equal(got, linksBefore) {
				t.Errorf("node links: before %v after %v", linksBefore, got)
			}
		})
	}
}
