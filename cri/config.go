package cri

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Config is berth-cri's configuration. Every field has a documented default
// (docs/cri-config.md); the TOML file only needs the fields that differ, and
// flags override the file.
type Config struct {
	// Socket is the CRI endpoint kubelet dials (--container-runtime-endpoint).
	Socket string `toml:"socket"`
	// SocketGroup, when set, owns the socket (mode 0660) so that non-root
	// tools in that group can use crictl.
	SocketGroup string `toml:"socket_group"`
	// ContainerdAddress and ContainerdNamespace select the containerd that
	// runs the containers. k8s.io is the namespace cAdvisor looks in.
	ContainerdAddress   string `toml:"containerd_address"`
	ContainerdNamespace string `toml:"containerd_namespace"`
	// Snapshotter unpacks images and holds container rootfs.
	Snapshotter string `toml:"snapshotter"`
	// RuncPath is the runc binary the shim executes; empty means "runc" in
	// the shim's PATH.
	RuncPath string `toml:"runc_path"`
	// CgroupDriver is cgroupfs or systemd and must match kubelet's.
	CgroupDriver string `toml:"cgroup_driver"`
	// PauseImage is the sandbox image; it is pulled on first use.
	PauseImage string `toml:"pause_image"`
	// RootDir holds persistent per-sandbox files; StateDir holds runtime
	// files (netns pins, FIFOs, /dev/shm mounts) that a reboot clears.
	RootDir  string `toml:"root_dir"`
	StateDir string `toml:"state_dir"`
	// CNI: the first conflist (lexical order) in ConfDir is used and
	// reloaded when the directory changes.
	CNIConfDir  string   `toml:"cni_conf_dir"`
	CNIBinDirs  []string `toml:"cni_bin_dirs"`
	CNICacheDir string   `toml:"cni_cache_dir"`
	// RegistryConfigDir holds containerd-style <host>/hosts.toml mirror
	// configuration (and _default/hosts.toml).
	RegistryConfigDir string `toml:"registry_config_dir"`
	// StreamAddress is where the exec/attach/port-forward server listens;
	// port 0 picks a free port.
	StreamAddress string `toml:"stream_address"`
	// StreamIdleTimeout closes idle exec/attach/port-forward streams.
	StreamIdleTimeout Duration `toml:"stream_idle_timeout"`
	// MetricsAddress serves Prometheus metrics and /healthz; empty disables.
	MetricsAddress string `toml:"metrics_address"`
	// MaxContainerLogLineSize splits longer lines into partial (P) records.
	MaxContainerLogLineSize int `toml:"max_container_log_line_size"`
	// TenantKey is the pod label or annotation that names the berth tenant.
	TenantKey string `toml:"tenant_key"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// Duration is a time.Duration that reads "30s"-style strings from TOML.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Socket:                  "/run/berth/cri.sock",
		ContainerdAddress:       "/run/containerd/containerd.sock",
		ContainerdNamespace:     "k8s.io",
		Snapshotter:             "overlayfs",
		CgroupDriver:            "cgroupfs",
		PauseImage:              "registry.k8s.io/pause:3.10.2",
		RootDir:                 "/var/lib/berth-cri",
		StateDir:                "/run/berth-cri",
		CNIConfDir:              "/etc/cni/net.d",
		CNIBinDirs:              []string{"/opt/cni/bin"},
		RegistryConfigDir:       "/etc/berth/certs.d",
		StreamAddress:           "127.0.0.1:0",
		StreamIdleTimeout:       Duration(4 * time.Hour),
		MetricsAddress:          "127.0.0.1:9320",
		MaxContainerLogLineSize: 16 * 1024,
		TenantKey:               "berth.dev/tenant",
		LogLevel:                "info",
	}
}

// LoadConfig reads a TOML file over the defaults. Unknown keys are an error,
// so a typo never silently falls back to a default.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if path == "" {
		return cfg, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	dec := toml.NewDecoder(f).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			var keys []string
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return cfg, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks the fields that would otherwise fail late and obscurely.
func (c *Config) Validate() error {
	var errs []string
	req := map[string]string{
		"socket": c.Socket, "containerd_address": c.ContainerdAddress,
		"containerd_namespace": c.ContainerdNamespace, "snapshotter": c.Snapshotter,
		"pause_image": c.PauseImage, "root_dir": c.RootDir, "state_dir": c.StateDir,
		"cni_conf_dir": c.CNIConfDir,
	}
	for k, v := range req {
		if v == "" {
			errs = append(errs, k+" must not be empty")
		}
	}
	for k, v := range map[string]string{"root_dir": c.RootDir, "state_dir": c.StateDir, "cni_conf_dir": c.CNIConfDir} {
		if v != "" && !filepath.IsAbs(v) {
			errs = append(errs, fmt.Sprintf("%s %q must be an absolute path", k, v))
		}
	}
	if c.CgroupDriver != "cgroupfs" && c.CgroupDriver != "systemd" {
		errs = append(errs, fmt.Sprintf("cgroup_driver %q must be cgroupfs or systemd", c.CgroupDriver))
	}
	if len(c.CNIBinDirs) == 0 {
		errs = append(errs, "cni_bin_dirs must name at least one directory")
	}
	if c.MaxContainerLogLineSize < 0 {
		errs = append(errs, "max_container_log_line_size must be >= 0")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("log_level %q must be debug, info, warn or error", c.LogLevel))
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("invalid config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// CNICache returns the libcni cache dir: berth's own, so results never mix
// with another runtime's /var/lib/cni.
func (c *Config) CNICache() string {
	if c.CNICacheDir != "" {
		return c.CNICacheDir
	}
	return filepath.Join(c.RootDir, "cni-cache")
}
