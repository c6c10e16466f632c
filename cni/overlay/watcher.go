package overlay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/berthdev/berth/cni/tenant"
)

const (
	// DefaultResyncInterval is how often a Watcher reconciles even when the
	// peers file did not change, to repair drift (a route deleted by hand,
	// a device recreated by someone else) and to pick up changes that
	// inotify cannot see (a peers file symlinked from another directory).
	DefaultResyncInterval = 30 * time.Second

	// defaultDebounce coalesces the burst of events one file replacement
	// produces (a Kubernetes ConfigMap update is several renames and
	// symlink swaps) into one reconcile.
	defaultDebounce = 100 * time.Millisecond
)

// Trigger says why a Watcher reconciled.
type Trigger string

// Reasons for a reconcile.
const (
	TriggerStart  Trigger = "start"
	TriggerFile   Trigger = "file" // the peers file or the tenant registry changed
	TriggerResync Trigger = "resync"
)

// Tenant is one tenant with a device on this node.
type Tenant struct {
	Name  string
	Index uint32 // registry index: VNI VNIFor(base, Index), table TableFor(Index)
}

// DeviceResult is the outcome of reconciling one tenant's device.
type DeviceResult struct {
	Tenant Tenant
	Device Device // as reconciled: VNI, Table and PodCIDR filled in
	Stats  Stats
	Err    error
}

// Result describes one reconcile attempt of a Watcher.
type Result struct {
	Trigger  Trigger
	Duration time.Duration
	// LoadErr is set when the peers file could not be read or is invalid.
	// The Watcher then reconciles the last good peer list, or does
	// nothing at all if there never was one (Skipped).
	LoadErr error
	// Stale: the peers file or the tenant registry was unusable and an
	// older version of it was applied.
	Stale   bool
	Skipped bool
	// RegistryErr is set when the tenant registry could not be read. The
	// last good tenant list (or, if there never was one, the default
	// tenant alone) was reconciled instead; the registry only ever grows,
	// so an older list lacks devices but has no wrong ones.
	RegistryErr error
	// Err is set when programming any device failed (all device errors,
	// joined).
	Err error

	// Stats sums the changes over all devices; Stats.Peers is the number
	// of remote peers (the same for every device).
	Stats Stats
	// Devices has one entry per tenant device, ordered by tenant index;
	// empty when Skipped.
	Devices []DeviceResult
	// Peers is the peer list that was applied (nil when Skipped), and
	// PodCIDR this node's pod CIDR as used (explicit, or from its own
	// entry in the peers file; invalid if neither).
	Peers   []Peer
	PodCIDR netip.Prefix
}

// OK reports whether the reconcile applied the current peers file and tenant
// registry fully.
func (r Result) OK() bool {
	return r.LoadErr == nil && r.RegistryErr == nil && r.Err == nil && !r.Skipped
}

// Watcher keeps one device per tenant in sync with a peers file: it
// reconciles once on start, again whenever the peers file or the tenant
// registry changes, and every ResyncInterval. Every tenant's device gets the
// same peers; only the VNI and the routing table differ (see TenantDevice).
//
// A peers file that cannot be read or parsed never tears the overlay down:
// the last good peer list stays programmed (and keeps being re-applied, so
// drift is still repaired) until a valid file appears. The same holds for the
// tenant registry.
type Watcher struct {
	// Device is the template for every reconcile; each tenant's device is
	// TenantDevice(Device, VNIBase, index), so Device.VNI and Device.Table
	// are replaced. If its PodCIDR is not valid, the podCIDR of this node's
	// own entry in the peers file (found by NodeName or by Device.LocalIP)
	// is used, so a node's pod CIDR can come from the same file as
	// everyone else's.
	Device    Device
	PeersFile string
	NodeName  string
	// TenantRegistry is the path of the tenant registry (cni/tenant)
	// that the CNI plugin fills. Every registered tenant gets a device;
	// the default tenant (index 0) always does, registered or not, and a
	// missing file means just that one. The file's directory is watched
	// (and created if missing, so it can be), so the device of a tenant
	// whose first pod the plugin is adding appears within Debounce.
	// Empty => only the default tenant's device.
	TenantRegistry string
	// VNIBase is the default tenant's VNI; 0 => Device.VNI.
	VNIBase uint32
	// ResyncInterval: 0 => DefaultResyncInterval, negative => no periodic
	// resync.
	ResyncInterval time.Duration
	// Debounce: 0 => 100ms.
	Debounce time.Duration
	Logger   *slog.Logger
	// OnResult, if set, is called after every reconcile attempt, on Run's
	// goroutine and so in its network namespace: for metrics and
	// readiness, and for follow-up work on the devices (attaching BPF
	// programs) that must see the same namespace.
	OnResult func(Result)

	// apply programs the device; tests replace it to run without root.
	apply func(d *Device, peers []Peer, self string) (Stats, error)

	last        []Peer   // last peer list that parsed
	lastTenants []Tenant // last tenant list read from the registry
}

func (w *Watcher) log() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// Run reconciles until ctx is done, then returns nil. It never deletes the
// device: an agent restart or upgrade must not interrupt pod traffic. It
// returns an error only if the peers file's directory cannot be watched.
//
// All netlink work happens on the calling goroutine, so a caller that locked
// it into a network namespace gets the whole Watcher in that namespace. Run
// keeps state between reconciles (the last good peer list) and must not be
// called concurrently on one Watcher.
func (w *Watcher) Run(ctx context.Context) error {
	if w.PeersFile == "" {
		return errors.New("overlay: watcher needs a peers file")
	}
	path, err := filepath.Abs(w.PeersFile)
	if err != nil {
		return fmt.Errorf("overlay: peers file path: %w", err)
	}
	watched := []watchedFile{{path: path, configMap: true}}
	if w.TenantRegistry != "" {
		reg, err := filepath.Abs(w.TenantRegistry)
		if err != nil {
			return fmt.Errorf("overlay: tenant registry path: %w", err)
		}
		// The plugin creates the directory with the first tenant; creating
		// it here (as the registry itself would) lets us watch for that.
		if err := os.MkdirAll(filepath.Dir(reg), 0o755); err != nil {
			return fmt.Errorf("overlay: tenant registry directory: %w", err)
		}
		watched = append(watched, watchedFile{path: reg})
	}

	// Watch the directories, not the files: replacing a file by rename
	// (what editors, `kubectl cp`-style tools and atomic writers, the
	// tenant registry among them, do) or swapping the ConfigMap "..data"
	// symlink leaves a watch on the old inode silent forever.
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("overlay: create file watcher: %w", err)
	}
	defer fsw.Close()
	added := map[string]bool{}
	for _, f := range watched {
		dir := filepath.Dir(f.path)
		if added[dir] {
			continue
		}
		if err := fsw.Add(dir); err != nil {
			return fmt.Errorf("overlay: watch %s: %w", dir, err)
		}
		added[dir] = true
	}

	w.sync(path, TriggerStart)

	var resync <-chan time.Time
	if iv := w.resyncInterval(); iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		resync = t.C
	}
	// The debounce window starts at the first event and is not extended by
	// later ones, so a file that keeps changing still gets reconciled at
	// least every Debounce; events after the read re-arm it.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	armed := false
	arm := func() {
		if !armed {
			armed = true
			debounce.Reset(w.debounce())
		}
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return errors.New("overlay: file watcher closed")
			}
			if relevantEvent(ev, watched) {
				w.log().Debug("watched file event", "event", ev.String())
				arm()
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return errors.New("overlay: file watcher closed")
			}
			// An overflowed event queue may have swallowed a change, so
			// treat any watcher error as a possible change.
			w.log().Warn("file watcher error; re-reading the watched files", "err", err)
			arm()
		case <-debounce.C:
			armed = false
			w.sync(path, TriggerFile)
		case <-resync:
			w.sync(path, TriggerResync)
		}
	}
}

// watchedFile is a file whose directory the Watcher watches.
type watchedFile struct {
	path string // absolute
	// configMap: the file may be mounted from a Kubernetes ConfigMap, so
	// the atomic writer's entries next to it count as changes too.
	configMap bool
}

// relevantEvent picks the directory events that can change what reading a
// watched file returns: the file itself, and for the peers file the
// Kubernetes atomic-writer entries ("..data", "..2024_…") that a
// ConfigMap-mounted file points into. A pure chmod changes nothing we read;
// neither does anything else in the directories (the registry's lock and
// temporary files, say).
func relevantEvent(ev fsnotify.Event, files []watchedFile) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	dir, name := filepath.Dir(ev.Name), filepath.Base(ev.Name)
	for _, f := range files {
		if dir != filepath.Dir(f.path) {
			continue
		}
		if name == filepath.Base(f.path) || (f.configMap && strings.HasPrefix(name, "..")) {
			return true
		}
	}
	return false
}

func (w *Watcher) resyncInterval() time.Duration {
	if w.ResyncInterval == 0 {
		return DefaultResyncInterval
	}
	return w.ResyncInterval
}

func (w *Watcher) debounce() time.Duration {
	if w.Debounce <= 0 {
		return defaultDebounce
	}
	return w.Debounce
}

// sync performs one reconcile attempt and reports it.
func (w *Watcher) sync(path string, trigger Trigger) {
	start := time.Now()
	res := Result{Trigger: trigger}
	log := w.log().With("trigger", string(trigger), "peersFile", path)
	defer func() {
		res.Duration = time.Since(start)
		if w.OnResult != nil {
			w.OnResult(res)
		}
	}()

	peers, err := LoadPeers(path)
	if err != nil {
		res.LoadErr = err
		if w.last == nil {
			res.Skipped = true
			log.Error("cannot load peers file and no earlier good version; overlay not programmed", "err", err)
			return
		}
		res.Stale = true
		log.Error("cannot load peers file; keeping the last good peer list", "err", err, "lastGoodEntries", len(w.last))
		peers = w.last
	} else {
		w.last = peers
	}
	tenants, err := w.tenants()
	if err != nil {
		res.RegistryErr = err
		res.Stale = true
		log.Error("cannot read the tenant registry; keeping the last good tenant list", "err", err,
			"registry", w.TenantRegistry, "tenants", len(tenants))
	}

	dev := w.Device
	if !dev.PodCIDR.IsValid() {
		dev.PodCIDR = w.selfPodCIDR(peers)
	}
	res.Peers, res.PodCIDR = peers, dev.PodCIDR
	apply := w.apply
	if apply == nil {
		apply = (*Device).Reconcile
	}
	var errs []error
	for _, t := range tenants {
		d := TenantDevice(dev, w.vniBase(), t.Index)
		dstart := time.Now()
		st, err := apply(&d, peers, w.NodeName)
		res.Devices = append(res.Devices, DeviceResult{Tenant: t, Device: d, Stats: st, Err: err})
		res.Stats.Added += st.Added
		res.Stats.Removed += st.Removed
		res.Stats.Peers = max(res.Stats.Peers, st.Peers)
		attrs := []any{"device", d.Name(), "tenant", t.Name, "table", d.table(), "peers", st.Peers,
			"added", st.Added, "removed", st.Removed, "duration", time.Since(dstart).Round(time.Microsecond)}
		switch {
		case err != nil:
			errs = append(errs, err)
			log.Error("reconcile failed", append(attrs, "err", err)...)
		case st.Added+st.Removed > 0 || trigger == TriggerStart:
			log.Info("reconciled overlay", attrs...)
		default:
			log.Debug("overlay already in sync", attrs...)
		}
	}
	res.Err = errors.Join(errs...)
}

// vniBase is the default tenant's VNI.
func (w *Watcher) vniBase() uint32 {
	if w.VNIBase == 0 {
		return w.Device.VNI
	}
	return w.VNIBase
}

// tenants returns the tenants that get a device, ordered by index, the
// default tenant always first. On a registry error it returns the last good
// list (or the default tenant alone) together with the error.
func (w *Watcher) tenants() ([]Tenant, error) {
	if w.TenantRegistry == "" {
		return []Tenant{{Name: tenant.Default}}, nil
	}
	list, err := LoadTenants(w.TenantRegistry)
	if err != nil {
		if w.lastTenants == nil {
			return []Tenant{{Name: tenant.Default}}, err
		}
		return w.lastTenants, err
	}
	w.lastTenants = list
	return list, nil
}

// LoadTenants reads the tenant registry at path and returns every tenant that
// gets a device, ordered by index: the registered ones plus the default
// tenant at index 0, which exists even when nothing is registered yet (a
// missing file is an empty registry). If several names claim one index (a
// hand-edited file), the default tenant or else the first name in sort order
// wins, so the result is stable and no VNI is programmed twice.
func LoadTenants(path string) ([]Tenant, error) {
	reg, err := tenant.Registry{Path: path}.List()
	if err != nil {
		return nil, err
	}
	out := []Tenant{{Name: tenant.Default, Index: 0}}
	seen := map[uint32]bool{}
	names := make([]string, 0, len(reg))
	for n := range reg {
		names = append(names, n)
	}
	// The default tenant's own claim comes first, so it keeps its name.
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == tenant.Default:
			return -1
		case b == tenant.Default:
			return 1
		}
		return cmp.Compare(a, b)
	})
	for _, n := range names {
		idx := reg[n]
		if seen[idx] {
			continue
		}
		seen[idx] = true
		if idx == 0 {
			// Registries written before index 0 was reserved for the
			// default tenant may have given it to a named tenant.
			out[0].Name = n
			continue
		}
		out = append(out, Tenant{Name: n, Index: idx})
	}
	slices.SortFunc(out, func(a, b Tenant) int { return cmp.Compare(a.Index, b.Index) })
	return out, nil
}

// selfPodCIDR finds this node's pod CIDR in the peer list: by node name first
// (the stable identity), then by underlay IP.
func (w *Watcher) selfPodCIDR(peers []Peer) netip.Prefix {
	local := w.Device.LocalIP.Unmap()
	byIP := netip.Prefix{}
	for _, p := range peers {
		cidr, err := netip.ParsePrefix(p.PodCIDR)
		if err != nil {
			continue
		}
		if w.NodeName != "" && p.NodeName == w.NodeName {
			return cidr
		}
		if ip, err := netip.ParseAddr(p.UnderlayIP); err == nil && ip.Unmap() == local && !byIP.IsValid() {
			byIP = cidr
		}
	}
	return byIP
}
