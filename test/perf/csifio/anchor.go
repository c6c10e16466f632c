package csifio

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// AnchorOptions describes the anchor's go-fuse options in the report.
const AnchorOptions = "fs.NewLoopbackRoot(dir) mounted by fs.Mount with fs.Options{MountOptions: fuse.MountOptions{AllowOther: true, " +
	"DirectMount: true, DisabledCapabilities: fuse.CAP_PASSTHROUGH}} (plus FsName/Name labels); everything else left unset: go-fuse's " +
	"max_write of 128 KiB, no writeback cache, page cache used for buffered I/O, entry and attribute timeouts 0 " +
	"(an fs.Options without them); served in-process by the test binary"

// anchor is the plain go-fuse loopback mount: the "typical FUSE driver".
type anchor struct {
	srv *fuse.Server
	mnt string
}

// mountAnchor mounts go-fuse's loopback of backing at mnt. passthrough
// false disables CAP_PASSTHROUGH (the anchor); true leaves go-fuse's
// default, which negotiates it as root on a 6.9+ kernel (the control).
// debug, when set, receives go-fuse's debug log.
func mountAnchor(backing, mnt string, passthrough bool, debug *syncBuffer) (*anchor, error) {
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, err
	}
	opts := &fs.Options{MountOptions: fuse.MountOptions{AllowOther: true, DirectMount: true,
		FsName: "bperf-anchor", Name: "bperf-loopback"}}
	if !passthrough {
		opts.MountOptions.DisabledCapabilities = fuse.CAP_PASSTHROUGH
	}
	if debug != nil {
		opts.Debug = true
		opts.Logger = log.New(debug, "", 0)
		opts.MountOptions.Logger = opts.Logger
	}
	srv, err := fs.Mount(mnt, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount go-fuse loopback at %s: %w", mnt, err)
	}
	return &anchor{srv: srv, mnt: mnt}, nil
}

// unmount detaches the mount and waits for the server to stop; a busy
// mount is detached lazily so a cleanup never hangs on it.
func (a *anchor) unmount() error {
	if a == nil || a.srv == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- a.srv.Unmount() }()
	select {
	case err := <-done:
		if err == nil {
			a.srv = nil
			return nil
		}
		if e := syscall.Unmount(a.mnt, syscall.MNT_DETACH); e != nil && !errors.Is(e, syscall.EINVAL) {
			return fmt.Errorf("unmount %s: %v; lazy unmount: %w", a.mnt, err, e)
		}
	case <-time.After(20 * time.Second):
		if e := syscall.Unmount(a.mnt, syscall.MNT_DETACH); e != nil && !errors.Is(e, syscall.EINVAL) {
			return fmt.Errorf("unmount %s timed out; lazy unmount: %w", a.mnt, e)
		}
	}
	a.srv = nil
	return nil
}

// backingFdAllowed asks the kernel to register a backing file on the
// mount's FUSE connection: the FUSE_DEV_IOC_BACKING_OPEN ioctl succeeds
// only on a connection that negotiated passthrough. A registered id is
// released at once.
func (a *anchor) backingFdAllowed(file string) (bool, string) {
	f, err := os.Open(file)
	if err != nil {
		return false, "cannot open a probe file: " + err.Error()
	}
	defer f.Close()
	id, errno := a.srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		return false, fmt.Sprintf("FUSE_DEV_IOC_BACKING_OPEN: %v (errno %d)", errno, int(errno))
	}
	a.srv.UnregisterBackingFd(id)
	return true, fmt.Sprintf("FUSE_DEV_IOC_BACKING_OPEN succeeded (backing id %d, released)", id)
}

// checkAnchor proves on probe mounts in work that DisabledCapabilities
// turns passthrough off: one with the anchor's options (whose INIT reply
// is recorded from go-fuse's debug log) and a control with go-fuse's
// defaults. The measured anchor itself is checked again by the caller.
func checkAnchor(work string) (check AnchorCheck, err error) {
	check.Options = AnchorOptions
	src := filepath.Join(work, "probe-src")
	probe := filepath.Join(src, "probe")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return check, err
	}
	if err := os.WriteFile(probe, []byte("probe\n"), 0o644); err != nil {
		return check, err
	}
	for _, passthrough := range []bool{false, true} {
		mnt := filepath.Join(work, fmt.Sprintf("probe-mnt-%t", passthrough))
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			return check, err
		}
		var dbg syncBuffer
		a, err := mountAnchor(src, mnt, passthrough, &dbg)
		if err != nil {
			return check, err
		}
		ok, msg := a.backingFdAllowed(probe)
		uerr := a.unmount()
		if passthrough {
			check.Control = fmt.Sprintf("Control: on a probe mount with go-fuse's defaults (no DisabledCapabilities) the same ioctl gives: %s.", msg)
			if !ok {
				check.Control += " (This kernel refuses passthrough even then, so the check above proves less.)"
			}
		} else {
			check.InitFlags = initReply(dbg.String())
			check.PassthroughOff = !ok && !strings.Contains(check.InitFlags, "PASSTHROUGH")
			check.Check = fmt.Sprintf("On a probe mount with the anchor's options, registering a backing file on the FUSE connection gives: %s.", msg)
		}
		if uerr != nil {
			return check, uerr
		}
	}
	return check, nil
}

// initReply picks go-fuse's reply to the kernel's INIT out of its debug
// log: the capabilities the connection negotiated ("tx N: OK, {7.28 Ra
// ... FLAGS ...}"). The kernel's offer (rx N: INIT) is left out: it lists
// PASSTHROUGH whatever the server answers.
func initReply(log string) string {
	var id string
	for line := range strings.SplitSeq(log, "\n") {
		if id == "" && strings.Contains(line, " INIT ") && strings.HasPrefix(line, "rx ") {
			if f := strings.Fields(line); len(f) > 1 {
				id = strings.TrimSuffix(f[1], ":")
			}
			continue
		}
		if id != "" && strings.HasPrefix(line, "tx "+id+":") {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	return ""
}

// syncBuffer is a bytes.Buffer safe for go-fuse's logging goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
