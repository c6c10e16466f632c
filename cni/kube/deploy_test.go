package kube

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/yaml"

	"github.com/berthdev/berth/cni/config"
)

// TestShippedConflist renders the template cni/deploy ships and checks
// that libcni loads it and berth's own parser accepts its plugin entry, so
// a typo in the manifest fails here and not on a node.
func TestShippedConflist(t *testing.T) {
	raw, err := os.ReadFile("../deploy/conflist.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	tmpl := cm.Data["10-berth.conflist.tmpl"]
	if tmpl == "" {
		t.Fatal("no 10-berth.conflist.tmpl in the ConfigMap")
	}
	b, err := RenderConf(tmpl, ConfData{PodCIDR: "10.244.1.0/24", NodeName: "kind-worker"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("libcni: %v", err)
	}
	if list.Plugins[0].Network.Type != "berth" {
		t.Fatalf("first plugin is %q", list.Plugins[0].Network.Type)
	}
	// The runtime hands each plugin its entry with name and cniVersion.
	var entry map[string]any
	json.Unmarshal(list.Plugins[0].Bytes, &entry)
	entry["name"], entry["cniVersion"] = list.Name, list.CNIVersion
	stdin, _ := json.Marshal(entry)
	if _, err := config.Parse(stdin); err != nil {
		t.Fatalf("berth rejects the shipped conflist: %v", err)
	}
}
