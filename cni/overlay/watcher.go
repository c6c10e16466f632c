package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
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
	TriggerFile   Trigger = "file"
	TriggerResync Trigger = "resync"
)

// Result describes one reconcile attempt of a Watcher.
type Result struct {
	Trigger  Trigger
	Stats    Stats
	Duration time.Duration
	// LoadErr is set when the peers file could not be read or is invalid.
	// The Watcher then reconciles the last good peer list (Stale), or does
	// nothing at all if there never was one (Skipped).
	LoadErr error
	Stale   bool
	Skipped bool
	// Err is set when programming the device failed.
	Err error
}

// OK reports whether the reconcile applied the current peers file fully.
func (r Result) OK() bool { return r.LoadErr == nil && r.Err == nil && !r.Skipped }

// Watcher keeps a Device in sync with a peers file: it reconciles once on
// start, again whenever the file changes, and every ResyncInterval.
//
// A peers file that cannot be read or parsed never tears the overlay down:
// the last good peer list stays programmed (and keeps being re-applied, so
// drift is still repaired) until a valid file appears.
type Watcher struct {
	// Device is the template for every reconcile. If its PodCIDR is not
	// valid, the podCIDR of this node's own entry in the peers file (found
	// by NodeName or by Device.LocalIP) is used, so a node's pod CIDR can
	// come from the same file as everyone else's.
	Device    Device
	PeersFile string
	NodeName  string
	// ResyncInterval: 0 => DefaultResyncInterval, negative => no periodic
	// resync.
	ResyncInterval time.Duration
	// Debounce: 0 => 100ms.
	Debounce time.Duration
	Logger   *slog.Logger
	// OnResult, if set, is called synchronously after every reconcile
	// attempt (for metrics and readiness).
	OnResult func(Result)

	// apply programs the device; tests replace it to run without root.
	apply func(d *Device, peers []Peer, self string) (Stats, error)

	last []Peer // last peer list that parsed
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
	dir, base := filepath.Split(path)

	// Watch the directory, not the file: replacing the file by rename (what
	// editors, `kubectl cp`-style tools and atomic writers do) or swapping
	// the ConfigMap "..data" symlink leaves a watch on the old inode
	// silent forever.
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("overlay: create file watcher: %w", err)
	}
	defer fsw.Close()
	if err := fsw.Add(dir); err != nil {
		return fmt.Errorf("overlay: watch %s: %w", dir, err)
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
			if relevantEvent(ev, base) {
				w.log().Debug("peers file event", "event", ev.String())
				arm()
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return errors.New("overlay: file watcher closed")
			}
			// An overflowed event queue may have swallowed a change, so
			// treat any watcher error as a possible change.
			w.log().Warn("file watcher error; re-reading peers file", "err", err)
			arm()
		case <-debounce.C:
			armed = false
			w.sync(path, TriggerFile)
		case <-resync:
			w.sync(path, TriggerResync)
		}
	}
}

// relevantEvent picks the directory events that can change what reading the
// peers file returns: the file itself, and the Kubernetes atomic-writer
// entries ("..data", "..2024_…") that a ConfigMap-mounted file points into.
// A pure chmod changes nothing we read.
func relevantEvent(ev fsnotify.Event, base string) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Base(ev.Name)
	return name == base || strings.HasPrefix(name, "..")
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

	dev := w.Device
	if !dev.PodCIDR.IsValid() {
		dev.PodCIDR = w.selfPodCIDR(peers)
	}
	apply := w.apply
	if apply == nil {
		apply = (*Device).Reconcile
	}
	res.Stats, res.Err = apply(&dev, peers, w.NodeName)
	attrs := []any{"peers", res.Stats.Peers, "added", res.Stats.Added, "removed", res.Stats.Removed,
		"duration", time.Since(start).Round(time.Microsecond)}
	switch {
	case res.Err != nil:
		log.Error("reconcile failed", append(attrs, "err", res.Err)...)
	case res.Stats.Added+res.Stats.Removed > 0 || trigger == TriggerStart:
		log.Info("reconciled overlay", attrs...)
	default:
		log.Debug("overlay already in sync", attrs...)
	}
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
