package cri

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/mountinfo"
)

// An OOM kill reaches berth-cri by three routes, because no single one
// survives every node:
//
//  1. The shim's TaskOOM event (watchOOM). On cgroup v1 the shim registers
//     an eventfd on memory.oom_control and, when it fires, publishes the
//     event only if the container's cgroup still exists. Under the systemd
//     cgroup driver (kind nodes) systemd removes the container's scope as
//     soon as its last process dies, which races that check: the event is
//     then dropped and the exit was reported as reason Error.
//  2. The cgroup's own OOM kill counter, read when the task exits: oom_kill
//     in memory.oom_control (v1, kernel >= 4.13) or memory.events (v2). It
//     counts the processes of this cgroup the kernel OOM-killed, so while
//     the cgroup exists it is the authoritative answer (CRI-O reads
//     memory.events the same way on v2). Under the cgroupfs driver the
//     cgroup lives until the task is deleted, which berth-cri does after
//     it has read the counter.
//  3. For when the cgroup is already gone (systemd driver): berth-cri's own
//     v1 eventfd on memory.oom_control, registered before the task starts.
//     The kernel signals it once per OOM in the cgroup (or an ancestor)
//     and once more when the cgroup is removed, and never after that. An
//     OOM signal always comes before the process dies, hence before the
//     cgroup can be removed, so signals read while the cgroup still exists
//     are OOMs, and after it is gone two or more signals mean an OOM. One
//     signal after removal is either; the removal notice is certain to
//     follow an OOM one, so berth-cri waits briefly for a second (see
//     oomWatch.decide and Service.oomKilled). On v2, where the counters
//     are hierarchical, the parent cgroup's memory.events stands in.

// oomVerdict is what a container's cgroup says about its exit.
type oomVerdict int

const (
	oomUnknown oomVerdict = iota // no evidence either way
	oomNo
	oomYes
	// oomMaybe: one v1 signal arrived after the cgroup was removed; a
	// second one would prove an OOM (see above).
	oomMaybe
)

func (v oomVerdict) String() string {
	return [...]string{"unknown", "no", "yes", "maybe"}[v]
}

// oomEvidence is what a watch has seen; decideOOM turns it into a verdict.
type oomEvidence struct {
	// counter: this cgroup's oom_kill could be read at exit; delta is its
	// growth since the watch started.
	counter      bool
	counterDelta uint64
	// v1 eventfd: armed, signals read while the cgroup existed, and
	// signals read after it was gone.
	eventfd   bool
	notified  uint64
	afterGone uint64
	// v2: the parent's hierarchical oom_kill could be read; its growth.
	parent      bool
	parentDelta uint64
}

// decideOOM weighs the evidence. sigkill says the init process died of
// SIGKILL (exit 137): the v2 parent's counter is only circumstantial (a
// sibling may have been the victim), so it counts only then.
func decideOOM(e oomEvidence, sigkill bool) oomVerdict {
	switch {
	case e.counter && e.counterDelta > 0:
		return oomYes
	case e.counter:
		return oomNo
	case e.eventfd && (e.notified > 0 || e.afterGone >= 2):
		return oomYes
	case e.eventfd && e.afterGone == 1:
		return oomMaybe
	case e.eventfd:
		return oomNo
	case e.parent && sigkill && e.parentDelta > 0:
		return oomYes
	case e.parent:
		return oomNo
	}
	return oomUnknown
}

// oomWatch follows the memory cgroup of one container's init process.
type oomWatch struct {
	dir       string // the container's memory cgroup directory
	v2        bool
	baseline  uint64 // oom_kill when the watch started
	noCounter bool   // the kernel has no oom_kill counter (< 4.13)

	parentDir      string // v2: the parent cgroup (the pod's)
	parentBaseline uint64
	parentOK       bool

	efd     *os.File      // v1: eventfd registered on memory.oom_control
	fd      int           // efd's descriptor, read directly by evidence()
	signals chan struct{} // one token after each eventfd read

	mu        sync.Mutex
	notified  uint64
	afterGone uint64
	closed    bool
}

// watchCgroupOOM starts watching the memory cgroup process pid is in. It
// must run before the process can exceed its limit: between the task's
// creation (runc has put the paused init in its cgroup) and its start.
func watchCgroupOOM(pid uint32) (*oomWatch, error) {
	dir, v2, err := memoryCgroupDir(pid)
	if err != nil {
		return nil, err
	}
	return newOOMWatch(dir, v2, true)
}

func newOOMWatch(dir string, v2, reader bool) (*oomWatch, error) {
	w := &oomWatch{dir: dir, v2: v2, signals: make(chan struct{}, 1)}
	var err error
	if w.baseline, err = readOOMKill(dir, v2); err != nil {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, serr
		}
		w.noCounter = true
	}
	if v2 {
		w.parentDir = filepath.Dir(dir)
		w.parentBaseline, err = readOOMKill(w.parentDir, true)
		w.parentOK = err == nil
		return w, nil
	}
	if err := w.armEventfd(reader); err != nil {
		// The counter alone still covers the cgroupfs driver.
		return w, fmt.Errorf("oom eventfd on %s: %w", dir, err)
	}
	return w, nil
}

// armEventfd registers an eventfd for the cgroup's OOM notifications and
// tallies them from a goroutine as they come, so that an OOM signal is
// usually classified while the cgroup still exists.
// Without reader (tests only), signals are read when evidence is taken.
func (w *oomWatch) armEventfd(reader bool) error {
	efd, err := registerOOMEventfd(w.dir)
	if err != nil {
		return err
	}
	w.fd = efd
	w.efd = os.NewFile(uintptr(efd), "oom-eventfd")
	rc, err := w.efd.SyscallConn()
	if err != nil {
		w.efd.Close()
		return err
	}
	if !reader {
		return nil
	}
	go func() {
		for {
			// The callback runs when the poller says the eventfd is
			// readable; returning false (nothing there: evidence() drained
			// it first) waits for the next signal.
			if err := rc.Read(func(uintptr) bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.drainLocked()
			}); err != nil {
				return // closed
			}
			select {
			case w.signals <- struct{}{}:
			default:
			}
		}
	}()
	return nil
}

// drainLocked reads the eventfd's pending count without blocking and
// tallies it; false when nothing was pending. Read first, then look: a
// cgroup that still exists after the read was not removed before it, so
// the count holds no removal notice. Callers hold w.mu.
func (w *oomWatch) drainLocked() bool {
	var buf [8]byte
	n, err := unix.Read(w.fd, buf[:])
	if err != nil || n != len(buf) {
		return false
	}
	k := binary.NativeEndian.Uint64(buf[:])
	if _, err := os.Lstat(filepath.Join(w.dir, "memory.oom_control")); errors.Is(err, fs.ErrNotExist) {
		w.afterGone += k
	} else {
		w.notified += k
	}
	return true
}

// registerOOMEventfd registers a new eventfd for memory.oom_control of the
// v1 memory cgroup dir through cgroup.event_control (cgroup v1's
// notification API). The eventfd is non-blocking so that reading it as an
// os.File parks in Go's poller rather than holding a thread.
func registerOOMEventfd(dir string) (int, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, err
	}
	ctl, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		unix.Close(efd)
		return -1, err
	}
	// The kernel takes its own references; the control file need not stay
	// open once the event is registered.
	defer ctl.Close()
	reg := fmt.Sprintf("%d %d", efd, ctl.Fd())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		unix.Close(efd)
		return -1, err
	}
	return efd, nil
}

// evidence collects what the watch knows now. Counters are read before
// the eventfd tallies so that a cgroup removed in between shows up in the
// tallies rather than being missed by both.
func (w *oomWatch) evidence() oomEvidence {
	var e oomEvidence
	if n, err := readOOMKill(w.dir, w.v2); err == nil && !w.noCounter {
		e.counter, e.counterDelta = true, n-min(n, w.baseline)
	}
	if w.efd != nil {
		// Signals the goroutine has not read yet are read here: an OOM
		// signal precedes the exit, so after the exit nothing pending may
		// be left out.
		w.mu.Lock()
		if !w.closed {
			w.drainLocked()
		}
		e.eventfd, e.notified, e.afterGone = true, w.notified, w.afterGone
		w.mu.Unlock()
	}
	if w.parentOK {
		if n, err := readOOMKill(w.parentDir, true); err == nil {
			e.parent, e.parentDelta = true, n-min(n, w.parentBaseline)
		}
	}
	return e
}

// decide returns the verdict; with patience > 0 an oomMaybe waits that
// long for the signal that settles it.
func (w *oomWatch) decide(sigkill bool, patience time.Duration) (oomVerdict, oomEvidence) {
	e := w.evidence()
	v := decideOOM(e, sigkill)
	if v != oomMaybe || patience <= 0 {
		return v, e
	}
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	// The reader's token wakes this at once; the ticker is the backstop
	// that does not depend on it.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for v == oomMaybe {
		select {
		case <-w.signals:
		case <-tick.C:
		case <-deadline.C:
			// Only the removal notice came: no OOM.
			e = w.evidence()
			if v = decideOOM(e, sigkill); v == oomMaybe {
				v = oomNo
			}
			return v, e
		}
		e = w.evidence()
		v = decideOOM(e, sigkill)
	}
	return v, e
}

// close unregisters the eventfd (closing it makes the kernel drop the
// event) and stops the reader.
func (w *oomWatch) close() {
	if w == nil {
		return
	}
	// Not under w.mu: Close waits for the reader goroutine to leave its
	// callback, which takes w.mu.
	w.mu.Lock()
	was := w.closed
	w.closed = true
	w.mu.Unlock()
	if !was && w.efd != nil {
		_ = w.efd.Close()
	}
}

// recoveredOOMWatch gives a container whose task exited while berth-cri
// was down the only evidence left: its cgroup's counter, when the cgroup
// still exists (cgroupfs driver: until the task is deleted). The cgroup
// was made for this container, so its counter started at zero. A systemd
// "slice:prefix:name" path is not resolved: such a cgroup is gone by now.
func recoveredOOMWatch(cgroupsPath string) *oomWatch {
	if cgroupsPath == "" || strings.Contains(cgroupsPath, ":") {
		return nil
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil
	}
	dir, v2, err := resolveMemoryCgroup("1:memory:"+cgroupsPath, mounts)
	if err != nil {
		if dir, v2, err = resolveMemoryCgroup("0::"+cgroupsPath, mounts); err != nil {
			return nil
		}
	}
	if _, err := readOOMKill(dir, v2); err != nil {
		return nil
	}
	return &oomWatch{dir: dir, v2: v2, signals: make(chan struct{}, 1)}
}

// readOOMKill reads the "oom_kill N" line of memory.oom_control (v1) or
// memory.events (v2).
func readOOMKill(dir string, v2 bool) (uint64, error) {
	name := "memory.oom_control"
	if v2 {
		name = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no oom_kill field (kernel older than 4.13?)", filepath.Join(dir, name))
}

// memoryCgroupDir finds the directory of the memory cgroup pid is in, as
// seen from this process: its /proc/<pid>/cgroup entry (v1 "memory"
// controller, else the v2 "0::" entry) placed under the matching cgroup
// mount of /proc/self/mountinfo. Both are relative to this process's cgroup
// namespace, so this works inside a kind node as on a host.
func memoryCgroupDir(pid uint32) (dir string, v2 bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", false, err
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return "", false, err
	}
	return resolveMemoryCgroup(string(b), mounts)
}

func resolveMemoryCgroup(procCgroup string, mounts []mountinfo.Mount) (string, bool, error) {
	var v1Path, v2Path string
	haveV1, haveV2 := false, false
	for _, line := range strings.Split(procCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2Path, haveV2 = parts[2], true
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			v1Path, haveV1 = parts[2], true
		}
	}
	path, fstype, v2 := v1Path, "cgroup", false
	if !haveV1 {
		if !haveV2 {
			return "", false, errors.New("no memory cgroup in /proc/<pid>/cgroup")
		}
		path, fstype, v2 = v2Path, "cgroup2", true
	}
	// The mount whose root is the deepest ancestor of the path: with
	// several (bind) mounts of one hierarchy, that one shows the cgroup.
	best := -1
	for i, m := range mounts {
		if m.FSType != fstype || (!v2 && !slices.Contains(strings.Split(m.SuperOptions, ","), "memory")) {
			continue
		}
		if !under(path, m.Root) {
			continue
		}
		if best < 0 || len(m.Root) > len(mounts[best].Root) {
			best = i
		}
	}
	if best < 0 {
		return "", false, fmt.Errorf("no %s mount shows memory cgroup %s", fstype, path)
	}
	m := mounts[best]
	rel := strings.TrimPrefix(path, strings.TrimSuffix(m.Root, "/"))
	return filepath.Join(m.Point, rel), v2, nil
}

// under reports whether cgroup path p is root or below it.
func under(p, root string) bool {
	if root == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == root || strings.HasPrefix(p, root+"/")
}

// String names the evidence that decided, for the log.
func (e oomEvidence) String() string {
	var parts []string
	if e.counter {
		parts = append(parts, fmt.Sprintf("oom_kill +%d", e.counterDelta))
	} else {
		parts = append(parts, "cgroup gone")
	}
	if e.eventfd {
		parts = append(parts, fmt.Sprintf("oom notifications %d, after removal %d", e.notified, e.afterGone))
	}
	if e.parent {
		parts = append(parts, fmt.Sprintf("parent oom_kill +%d", e.parentDelta))
	}
	return strings.Join(parts, "; ")
}
