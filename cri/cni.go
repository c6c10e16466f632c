package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/fsnotify/fsnotify"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cniManager owns the network configuration: every conflist in the conf
// dir, the first (in lexical order) being the default network, reloaded
// when the directory changes, and the libcni calls made with them. A pod
// picks another network by name with the berth.dev/network annotation. libcni's cache lives in berth-cri's own root so its results never mix
// with another runtime's /var/lib/cni.
type cniManager struct {
	cfg Config
	log *slog.Logger
	cni *libcni.CNIConfig

	mu      sync.RWMutex
	list    *libcni.NetworkConfigList            // the default network
	byName  map[string]*libcni.NetworkConfigList // every loadable network
	file    string
	loadErr error

	watcher *fsnotify.Watcher
}

func newCNIManager(cfg Config, log *slog.Logger) (*cniManager, error) {
	m := &cniManager{
		cfg: cfg,
		log: log,
		cni: libcni.NewCNIConfigWithCacheDir(cfg.CNIBinDirs, cfg.CNICache(), nil),
	}
	m.reload()
	return m, nil
}

// reload picks the first loadable config file in lexical order, the rule
// kubelet-era runtimes share, so an operator can stage a new file safely by
// naming it later.
func (m *cniManager) reload() {
	all, files, err := loadConfs(m.cfg.CNIConfDir)
	var list *libcni.NetworkConfigList
	var file string
	byName := map[string]*libcni.NetworkConfigList{}
	for i, l := range all {
		if i == 0 {
			list, file = l, files[0]
		}
		if _, dup := byName[l.Name]; !dup { // the first file of a name wins, as for the default
			byName[l.Name] = l
		}
	}
	m.mu.Lock()
	changed := file != m.file || (err == nil) != (m.loadErr == nil) || len(byName) != len(m.byName)
	m.list, m.byName, m.file, m.loadErr = list, byName, file, err
	m.mu.Unlock()
	if changed {
		if err != nil {
			m.log.Warn("no usable CNI config", "dir", m.cfg.CNIConfDir, "err", err)
		} else {
			m.log.Info("CNI config loaded", "file", file, "network", list.Name, "cniVersion", list.CNIVersion, "networks", len(byName))
		}
	}
}

// loadConfs loads every usable config file in lexical order. Files that
// fail to load are skipped; if none loads, the errors are returned.
func loadConfs(dir string) ([]*libcni.NetworkConfigList, []string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(files)
	var errs []error
	var lists []*libcni.NetworkConfigList
	var names []string
	for _, f := range files {
		var list *libcni.NetworkConfigList
		if strings.HasSuffix(f, ".conflist") {
			list, err = libcni.ConfListFromFile(f)
		} else {
			var conf *libcni.NetworkConfig
			if conf, err = libcni.ConfFromFile(f); err == nil {
				list, err = libcni.ConfListFromConf(conf)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if len(list.Plugins) == 0 {
			errs = append(errs, fmt.Errorf("%s: no plugins", f))
			continue
		}
		lists, names = append(lists, list), append(names, f)
	}
	if len(lists) > 0 {
		return lists, names, nil
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return nil, nil, fmt.Errorf("no network config found in %s", dir)
}

// NetworkAnnotation names the network (a conflist's "name") a pod joins
// instead of the default one.
const NetworkAnnotation = "berth.dev/network"

// network returns the conflist a sandbox uses: the one its annotation
// names, else the default.
func (m *cniManager) network(sb *sandbox) (*libcni.NetworkConfigList, error) {
	name := sb.Config.GetAnnotations()[NetworkAnnotation]
	if name == "" {
		return m.current()
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if l, ok := m.byName[name]; ok {
		return l, nil
	}
	known := make([]string, 0, len(m.byName))
	for n := range m.byName {
		known = append(known, n)
	}
	sort.Strings(known)
	return nil, fmt.Errorf("annotation %s: no CNI network %q in %s (have: %s)", NetworkAnnotation, name, m.cfg.CNIConfDir, strings.Join(known, ", "))
}

func (m *cniManager) current() (*libcni.NetworkConfigList, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.list == nil {
		return nil, fmt.Errorf("cni config uninitialized: %v", m.loadErr)
	}
	return m.list, nil
}

// watch reloads the config when files in the conf dir change. A missing dir
// is watched through its parent being polled.
func (m *cniManager) watch(stop <-chan struct{}) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		m.log.Warn("cannot watch CNI conf dir, polling", "err", err)
	} else {
		m.watcher = w
	}
	go func() {
		watching := false
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		var events chan fsnotify.Event
		if w != nil {
			events = w.Events
		}
		for {
			if w != nil && !watching {
				if err := w.Add(m.cfg.CNIConfDir); err == nil {
					watching = true
					m.reload()
				}
			}
			select {
			case <-stop:
				return
			case <-events:
				m.reload()
			case <-tick.C:
				m.reload()
			}
		}
	}()
}

func (m *cniManager) close() {
	if m.watcher != nil {
		m.watcher.Close()
	}
}

// status runs the plugins' STATUS verb (a no-op below cniVersion 1.1.0).
func (m *cniManager) status(ctx context.Context) error {
	list, err := m.current()
	if err != nil {
		return err
	}
	return m.cni.GetStatusNetworkList(ctx, list)
}

// runtimeConf builds the CNI_ARGS and capability args for a sandbox.
func (m *cniManager) runtimeConf(sb *sandbox, tenantKey string) *libcni.RuntimeConf {
	md := sb.Config.GetMetadata()
	rc := &libcni.RuntimeConf{
		ContainerID: sb.ID,
		NetNS:       sb.NetNSPath,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", md.GetNamespace()},
			{"K8S_POD_NAME", md.GetName()},
			{"K8S_POD_INFRA_CONTAINER_ID", sb.ID},
			{"K8S_POD_UID", md.GetUid()},
		},
		CapabilityArgs: map[string]any{},
	}
	annotations := sb.Config.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	rc.CapabilityArgs["io.kubernetes.cri.pod-annotations"] = annotations
	var pm []cniPortMapping
	for _, p := range sb.Config.GetPortMappings() {
		// Only host ports are the plugin's business; containerPort-only
		// entries are informational in the pod spec.
		if p.GetHostPort() <= 0 {
			continue
		}
		pm = append(pm, cniPortMapping{
			HostPort: p.GetHostPort(), ContainerPort: p.GetContainerPort(),
			Protocol: strings.ToLower(p.GetProtocol().String()), HostIP: p.GetHostIp(),
		})
	}
	if len(pm) > 0 {
		rc.CapabilityArgs["portMappings"] = pm
	}
	if bw, err := podBandwidth(annotations); err == nil && bw != nil {
		rc.CapabilityArgs["bandwidth"] = bw
	}
	if dns := sb.Config.GetDnsConfig(); dns != nil {
		rc.CapabilityArgs["dns"] = map[string][]string{
			"servers": dns.GetServers(), "searches": dns.GetSearches(), "options": dns.GetOptions(),
		}
	}
	if t := tenantOf(sb.Config, tenantKey); t != "" {
		rc.CapabilityArgs["tenant"] = t
	}
	if p := sb.Config.GetLinux().GetCgroupParent(); p != "" {
		rc.CapabilityArgs["cgroupPath"] = p
	}
	return rc
}

type cniPortMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

type cniBandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// tenantOf reads the tenant from the pod label, else its annotation.
func tenantOf(c *runtime.PodSandboxConfig, key string) string {
	if key == "" {
		return ""
	}
	if v := c.GetLabels()[key]; v != "" {
		return v
	}
	return c.GetAnnotations()[key]
}

// podBandwidth converts kubernetes.io/{ingress,egress}-bandwidth into the
// bandwidth capability. The burst is 4 ms at the rate with an eight-frame
// floor, as berth-cni's default: the reference bandwidth plugin demands a
// burst with every rate, and containerd's MaxUint32 lets a pod send
// unshaped for seconds.
func podBandwidth(annotations map[string]string) (*cniBandwidth, error) {
	var bw cniBandwidth
	for key, dst := range map[string]*uint64{
		"kubernetes.io/ingress-bandwidth": &bw.IngressRate,
		"kubernetes.io/egress-bandwidth":  &bw.EgressRate,
	} {
		v, ok := annotations[key]
		if !ok {
			continue
		}
		r, err := parseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", key, err)
		}
		*dst = r
	}
	if bw.IngressRate == 0 && bw.EgressRate == 0 {
		return nil, nil
	}
	burst := func(rate uint64) uint64 {
		if rate == 0 {
			return 0
		}
		return max(rate*4/1000, 8*1514*8)
	}
	bw.IngressBurst, bw.EgressBurst = burst(bw.IngressRate), burst(bw.EgressRate)
	return &bw, nil
}

// parseQuantity parses the Kubernetes quantity forms used for bandwidth:
// plain numbers, decimal SI suffixes (k, M, G, T, P, E) and binary ones
// (Ki … Ei). Fractions are allowed ("1.5M").
func parseQuantity(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	mult := 1.0
	suffixes := []struct {
		s string
		m float64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
	}
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf.s) {
			mult = suf.m
			s = strings.TrimSuffix(s, suf.s)
			break
		}
	}
	var f float64
	if _, err := fmt.Sscanf(s, "%g", &f); err != nil || s == "" {
		return 0, fmt.Errorf("%q is not a quantity", s)
	}
	v := f * mult
	if v < 0 || math.IsNaN(v) || v > math.MaxUint64/2 {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return uint64(v), nil
}

// setup runs CNI ADD and returns the pod IPs from the eth0 interface, IPv4
// first as kubelet expects the primary IP to be.
func (m *cniManager) setup(ctx context.Context, sb *sandbox, rc *libcni.RuntimeConf) ([]string, error) {
	list, err := m.network(sb)
	if err != nil {
		return nil, err
	}
	res, err := m.cni.AddNetworkList(ctx, list, rc)
	if err != nil {
		return nil, err
	}
	return podIPs(res)
}

func podIPs(res cnitypes.Result) ([]string, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("convert CNI result: %w", err)
	}
	var v4, v6 []string
	for _, ip := range r.IPs {
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(r.Interfaces) {
			if r.Interfaces[*ip.Interface].Name != "eth0" {
				continue
			}
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	return append(v4, v6...), nil
}

// teardown runs CNI DEL. A netns that is already gone still gets DEL
// (with an empty path) so IPAM releases the address.
func (m *cniManager) teardown(ctx context.Context, sb *sandbox, rc *libcni.RuntimeConf) error {
	list, err := m.network(sb)
	if err != nil {
		return err
	}
	if rc.NetNS != "" {
		if _, err := os.Stat(rc.NetNS); err != nil {
			rc.NetNS = ""
		}
	}
	return m.cni.DelNetworkList(ctx, list, rc)
}

// networkReady reports the NetworkReady condition for Status.
func (m *cniManager) networkReady(ctx context.Context) *runtime.RuntimeCondition {
	c := &runtime.RuntimeCondition{Type: runtime.NetworkReady, Status: true}
	if err := m.status(ctx); err != nil {
		c.Status = false
		c.Reason = "NetworkPluginNotReady"
		c.Message = fmt.Sprintf("Network plugin returns error: %v", err)
	}
	return c
}

// cniConfFile is used in logs and tests.
func (m *cniManager) cniConfFile() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return filepath.Base(m.file)
}
