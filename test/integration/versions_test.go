package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"
)

// rtSpecVersions are the spec versions runtimes in the field still send.
var rtSpecVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// TestVersionsLifecycle runs ADD, CHECK (where the spec has it) and DEL
// with every supported spec version and checks that the result is encoded
// in the version the runtime asked for.
func TestVersionsLifecycle(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	const network = "bti-ver"
	for i, v := range rtSpecVersions {
		t.Run(v, func(t *testing.T) {
			nodeLinks := n.links(t)
			subnet := fmt.Sprintf("198.18.%d.0/24", 22+i)
			conf := netConf(t, v, network, "macvlan", n.Uplink, subnet, nil)
			dataDir := dataDirOf(t, conf)
			p := pod{ns: newNS(t, "p"), id: "ctr-" + randHex(8), ifName: "eth0"}
			raw, err := n.invoke(cniCall{Command: "ADD", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf})
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			t.Cleanup(func() {
				_, _ = n.invoke(cniCall{Command: "DEL", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf})
			})
			p.raw = raw

			// The envelope must be the requested version, and so must its
			// body: before 1.0.0 every IP carried "version".
			var env struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []map[string]any
			}
			if err := json.Unmarshal(raw, &env); err != nil {
				t.Fatalf("ADD output is not JSON: %v\n%s", err, raw)
			}
			if env.CNIVersion != v {
				t.Errorf("result cniVersion %q, want %q:\n%s", env.CNIVersion, v, raw)
			}
			old, _ := version.GreaterThan("1.0.0", v)
			for _, ipc := range env.IPs {
				if _, has := ipc["version"]; has != old {
					t.Errorf("ips entry %v: has \"version\" = %v, want %v for %s", ipc, has, old, v)
				}
			}
			r, err := create.Create(v, raw)
			if err != nil {
				t.Fatalf("result does not parse as %s: %v\n%s", v, err, raw)
			}
			if r.Version() != v {
				t.Errorf("parsed result version %s, want %s", r.Version(), v)
			}
			res, err := current.NewResultFromResult(r)
			if err != nil {
				t.Fatal(err)
			}
			rtVerifyAttached(t, res, p.ns, "eth0", subnet)
			if got := allocations(t, dataDir, network); len(got) != 1 {
				t.Errorf("allocations %v, want 1", got)
			}

			checkable, _ := version.GreaterThanOrEqualTo(v, "0.4.0")
			_, err = n.invoke(cniCall{Command: "CHECK", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: withPrev(t, conf, raw)})
			if checkable {
				if err != nil {
					t.Errorf("CHECK: %v", err)
				}
			} else {
				wantCode(t, err, 1, "does not allow CHECK")
			}

			// Runtimes send prevResult on DEL from 0.4.0 on.
			delConf := conf
			if checkable {
				delConf = withPrev(t, conf, raw)
			}
			if _, err := n.invoke(cniCall{Command: "DEL", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: delConf}); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("pod links after DEL: %v", got)
			}
			if got := allocations(t, dataDir, network); len(got) != 0 {
				t.Errorf("allocations left after DEL: %v", got)
			}
			if got := rtMentions(t, dataDir, p.id); len(got) != 0 {
				t.Errorf("files still naming the pod after DEL: %v", got)
			}
			if got := n.links(t); !slices.Equal(got, nodeLinks) {
				t.Errorf("node links changed: before %v after %v", nodeLinks, got)
			}
		})
	}
}

// TestVersionsVersionCommand: VERSION lists every version runtimes use.
func TestVersionsVersionCommand(t *testing.T) {
	requireRoot(t)
	n := node{netNS: newNS(t, "v")}
	raw, err := n.invoke(cniCall{Command: "VERSION"})
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	var info map[string]json.RawMessage
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("VERSION output is not JSON: %v\n%s", err, raw)
	}
	var cv string
	if err := json.Unmarshal(info["cniVersion"], &cv); err != nil || cv == "" {
		t.Errorf("VERSION output has no cniVersion: %s", raw)
	} else if cv != version.Current() {
		t.Errorf("VERSION cniVersion %q, want %q", cv, version.Current())
	}
	var supported []string
	if err := json.Unmarshal(info["supportedVersions"], &supported); err != nil {
		t.Fatalf("VERSION supportedVersions: %v\n%s", err, raw)
	}
	for _, v := range rtSpecVersions {
		if !slices.Contains(supported, v) {
			t.Errorf("supportedVersions %v lacks %s", supported, v)
		}
	}
}

// TestVersionsUnsupported: versions berth does not speak, and verbs the
// configured version does not have, fail with code 1 (incompatible CNI
// version) and touch nothing.
func TestVersionsUnsupported(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	nodeLinks := n.links(t)
	const network = "bti-unsup"
	tests := []struct {
		version, command string
		// skel's messages, which tell the operator which side is too old
		substr string
	}{
		{"0.2.0", "ADD", "incompatible CNI versions"},
		{"0.2.0", "DEL", "incompatible CNI versions"},
		{"0.2.0", "CHECK", "config version does not allow CHECK"},
		{"2.0.0", "ADD", "incompatible CNI versions"},
		{"2.0.0", "DEL", "incompatible CNI versions"},
		{"2.0.0", "CHECK", "plugin version does not allow CHECK"},
		{"2.0.0", "STATUS", "plugin version does not allow STATUS"},
		{"2.0.0", "GC", "plugin version does not allow GC"},
		// STATUS and GC are CNI 1.1 verbs.
		{"1.0.0", "STATUS", "config version does not allow STATUS"},
		{"1.0.0", "GC", "config version does not allow GC"},
		{"0.4.0", "GC", "config version does not allow GC"},
	}
	for _, tc := range tests {
		t.Run(tc.version+"/"+tc.command, func(t *testing.T) {
			conf := netConf(t, tc.version, network, "macvlan", n.Uplink, "198.18.26.0/24", nil)
			p := pod{ns: newNS(t, "p"), id: "ctr-" + randHex(8), ifName: "eth0"}
			c := cniCall{Command: tc.command, Conf: conf}
			switch tc.command {
			case "ADD", "CHECK", "DEL":
				c.ContainerID, c.Netns, c.IfName = p.id, p.ns.Path(), "eth0"
			case "GC":
				c.Conf = setJSON(t, conf, "cni.dev/valid-attachments", []any{})
			}
			_, err := n.invoke(c)
			wantCode(t, err, 1, tc.substr)
			if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("pod links: %v", got)
			}
			if got := allocations(t, dataDirOf(t, conf), network); len(got) != 0 {
				t.Errorf("allocations: %v", got)
			}
			if got := n.links(t); !slices.Equal(got, nodeLinks) {
				t.Errorf("node links changed: before %v after %v", nodeLinks, got)
			}
		})
	}
}

// TestVersionsGCNeeds11 adds a pod with a 1.0.0 configuration and then
// sends GC with no valid attachment: skel must refuse it (code 1) before
// the plugin runs, so the pod's address stays allocated. The same GC in
// 1.1.0 releases it, proving the refusal is about the version.
func TestVersionsGCNeeds11(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	const network = "bti-gcver"
	conf := netConf(t, "1.0.0", network, "macvlan", n.Uplink, "198.18.27.0/24", nil)
	dataDir := dataDirOf(t, conf)
	p := n.add(t, conf)
	t.Cleanup(func() { n.del(t, conf, p) })

	gc := func(v string) error {
		c := setJSON(t, setJSON(t, conf, "cniVersion", v), "cni.dev/valid-attachments", []any{})
		_, err := n.invoke(cniCall{Command: "GC", Conf: c})
		return err
	}
	wantCode(t, gc("1.0.0"), 1, "config version does not allow GC")
	if got := allocations(t, dataDir, network); !slices.Equal(got, []string{p.ip()}) {
		t.Errorf("allocations after refused GC %v, want [%s]", got, p.ip())
	}
	if err := n.check(t, conf, p); err != nil {
		t.Errorf("CHECK after refused GC: %v", err)
	}
	if err := gc("1.1.0"); err != nil {
		t.Fatalf("GC 1.1.0: %v", err)
	}
	if got := allocations(t, dataDir, network); len(got) != 0 {
		t.Errorf("allocations after GC 1.1.0: %v", got)
	}
}
