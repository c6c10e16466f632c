package cri

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// berth-cri driving berth-cni (macvlan on a test veth): the pod's tenant
// label and bandwidth annotation travel as CNI capabilities, the tenant
// lands in berth's registry, the pod's interface is shaped, and removing
// the pod releases the address.
func TestBerthCNIThroughCRI(t *testing.T) {
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	master := "btim" + fmt.Sprintf("%x", os.Getpid()%0xffff)
	if out, err := exec.Command("ip", "link", "add", master, "type", "veth", "peer", "name", master+"p").CombinedOutput(); err != nil {
		t.Fatalf("create master veth: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", master).Run() })
	for _, l := range []string{master, master + "p"} {
		if out, err := exec.Command("ip", "link", "set", l, "up").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	dir := t.TempDir()
	pinDir := "/sys/fs/bpf/bti" + fmt.Sprintf("%x", os.Getpid())
	t.Cleanup(func() { _ = os.RemoveAll(pinDir) })
	registry := filepath.Join(dir, "tenants.json")
	ipamDir := filepath.Join(dir, "ipam")
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.1.0",
		"name":       "bti-berth",
		"plugins": []any{map[string]any{
			"type": "berth", "mode": "macvlan", "macvlanMode": "bridge", "master": master,
			"ipam":      map[string]any{"subnet": "198.18.236.0/24", "dataDir": ipamDir},
			"bpfPinDir": pinDir,
			"tenancy":   map[string]any{"registry": registry},
			"capabilities": map[string]bool{"bandwidth": true, "tenant": true,
				"io.kubernetes.cri.pod-annotations": true},
		}},
	})
	e := newEnv(t, envOpts{conflist: string(conf)})
	e.pull(busybox)
	pod := podConfig("bti-berthcni")
	pod.Labels["berth.dev/tenant"] = "blue"
	pod.Annotations = map[string]string{"kubernetes.io/egress-bandwidth": "10M"}
	podID := e.runPod(pod)
	st, err := e.rt.PodSandboxStatus(e.ctx(), &runtime.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	ip := st.Status.Network.Ip
	if !strings.HasPrefix(ip, "198.18.236.") {
		t.Fatalf("pod IP %q, want one from berth's 198.18.236.0/24", ip)
	}
	reg, err := os.ReadFile(registry)
	if err != nil || !strings.Contains(string(reg), `"blue"`) {
		t.Fatalf("tenant from the pod label not registered: %s %v", reg, err)
	}
	id := e.createContainer(podID, pod, "c", busybox, "sleep", "3600")
	e.startContainer(id)
	r, err := e.rt.ExecSync(e.ctx(), &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", "/sys/class/net/eth0/address"}, Timeout: 10})
	if err != nil || len(strings.TrimSpace(string(r.Stdout))) != 17 {
		t.Fatalf("eth0 in the pod: %v %q", err, r.GetStdout())
	}
	// The egress shaper (HTB on the pod's eth0) comes from the annotation.
	var netns string
	if info, err := e.rt.PodSandboxStatus(e.ctx(), &runtime.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true}); err == nil {
		var v struct {
			NetNamespacePath string `json:"netNamespacePath"`
		}
		_ = json.Unmarshal([]byte(info.Info["info"]), &v)
		netns = v.NetNamespacePath
	}
	out, err := exec.Command("nsenter", "--net="+netns, "tc", "qdisc", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "htb") {
		t.Fatalf("no shaping qdisc on the pod's eth0 (netns %q): %v\n%s", netns, err, out)
	}
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtime.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(ipamDir, "bti-berth"))
	for _, x := range ents {
		if strings.HasPrefix(x.Name(), "198.") {
			t.Fatalf("address %s still allocated after RemovePodSandbox", x.Name())
		}
	}
}
