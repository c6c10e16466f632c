package fusefs

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FSType is the filesystem type the mounts carry (fuse.<subtype>).
const FSType = "fuse.berth-csi"

// MountConfig tunes the FUSE connection. A takeover must use the values the
// connection was mounted with, because the kernel negotiated them once.
type MountConfig struct {
	Name         string // mount source, shown by findmnt
	MaxWrite     int    // bytes per WRITE request
	MaxReadAhead int
	Debug        bool
}

func (c MountConfig) withDefaults() MountConfig {
	if c.MaxWrite == 0 {
		c.MaxWrite = 1 << 20
	}
	if c.MaxReadAhead == 0 {
		c.MaxReadAhead = 1 << 20
	}
	if c.Name == "" {
		c.Name = "berth-csi"
	}
	return c
}

func (c MountConfig) options() *fuse.MountOptions {
	return &fuse.MountOptions{
		MaxWrite:     c.MaxWrite,
		MaxReadAhead: c.MaxReadAhead,
		// fio at queue depth 16 and parallel pods need more than go-fuse's
		// default of 12 background requests.
		MaxBackground:      64,
		DisableReadDirPlus: true,
		// Passthrough refuses (ELOOP) a backing file whose filesystem is
		// stacked as deep as this; 2, the kernel's maximum, lets the store
		// live on overlayfs, as it does inside a kind node. The price is
		// that a volume cannot itself be an overlayfs layer.
		MaxStackDepth: 2,
		// Writers open with direct I/O (see FS.opened); these keep mmap and
		// the kernel's asynchronous direct I/O working for them.
		ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP | fuse.CAP_ASYNC_DIO | fuse.CAP_PARALLEL_DIROPS,
		Name:              "berth-csi",
		FsName:            c.Name,
		Debug:             c.Debug,
		Logger:            log.New(os.Stderr, "fuse: ", 0),
	}
}

// Mount is one live FUSE connection and the server answering it.
type Mount struct {
	Target string
	FS     *FS
	Server *fuse.Server
	// Dev is this process's own copy of the /dev/fuse descriptor, the one
	// handed to the fd store so the connection outlives the process.
	Dev int
	// Init is the kernel's INIT request, replayed to a new server on
	// takeover so that it agrees with what the kernel negotiated.
	Init []byte
	done chan struct{}
}

// Done is closed when the server stops (unmount or connection abort).
func (m *Mount) Done() <-chan struct{} { return m.done }

// MountNew mounts fsys at target with mount(2) on a /dev/fuse descriptor
// this process opened, so that the descriptor can be kept elsewhere.
func MountNew(target string, fsys *FS, cfg MountConfig) (*Mount, error) {
	cfg = cfg.withDefaults()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other,max_read=%d", fd, cfg.MaxWrite)
	if err := unix.Mount(cfg.Name, target, FSType, unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount %s: %w", target, err)
	}
	dev, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		unix.Close(fd)
		return nil, err
	}
	srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", fd), cfg.options())
	if err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		unix.Close(dev)
		return nil, fmt.Errorf("fuse init: %w", err)
	}
	ks := srv.KernelSettings()
	init := append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(ks)), unsafe.Sizeof(*ks))...)
	return start(target, fsys, srv, dev, init), nil
}

func start(target string, fsys *FS, srv *fuse.Server, dev int, init []byte) *Mount {
	m := &Mount{Target: target, FS: fsys, Server: srv, Dev: dev, Init: init, done: make(chan struct{})}
	go func() {
		srv.Serve()
		close(m.done)
	}()
	return m
}

// notifyResend is FUSE_NOTIFY_RESEND (Linux 6.9): the kernel puts every
// request the old server read but never answered back in the queue.
const notifyResend = 7

// Takeover serves an existing connection whose /dev/fuse descriptor dev
// came from an earlier process. go-fuse's server insists on reading INIT
// first, so it is given the recorded INIT on a socket, and the socket's
// descriptor number is then pointed at the real device before serving.
func Takeover(target string, dev int, init []byte, fsys *FS, cfg MountConfig) (*Mount, error) {
	cfg = cfg.withDefaults()
	var ks fuse.InitIn
	if len(init) != int(unsafe.Sizeof(ks)) {
		return nil, fmt.Errorf("recorded INIT is %d bytes, want %d", len(init), unsafe.Sizeof(ks))
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(sp[1])
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&ks)), len(init)), init)
	ks.InHeader.Length = uint32(len(init))
	ks.InHeader.Opcode = 26 // FUSE_INIT
	if _, err := unix.Write(sp[1], unsafe.Slice((*byte)(unsafe.Pointer(&ks)), len(init))); err != nil {
		unix.Close(sp[0])
		return nil, err
	}
	srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", sp[0]), cfg.options())
	if err != nil {
		unix.Close(sp[0])
		return nil, fmt.Errorf("replay init: %w", err)
	}
	// The server now owns descriptor number sp[0]; make it the device.
	if err := unix.Dup3(dev, sp[0], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("dup3: %w", err)
	}
	hdr := fuse.OutHeader{Length: uint32(unsafe.Sizeof(fuse.OutHeader{})), Status: notifyResend}
	if _, err := unix.Write(dev, unsafe.Slice((*byte)(unsafe.Pointer(&hdr)), hdr.Length)); err != nil && !errors.Is(err, unix.ENOENT) {
		// A kernel without RESEND leaves requests the old server was
		// answering pending; new ones are served all the same.
		fsys.log.Warn("FUSE resend not accepted", "target", target, "err", err)
	}
	return start(target, fsys, srv, dev, init), nil
}

// Unmount detaches the mount; the server then sees the connection end.
func (m *Mount) Unmount() error {
	err := unix.Unmount(m.Target, 0)
	if err == unix.EBUSY {
		err = unix.Unmount(m.Target, unix.MNT_DETACH)
	}
	if err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", m.Target, err)
	}
	<-m.done
	unix.Close(m.Dev)
	m.FS.Close()
	return nil
}

// Measure walks a backing directory and returns what it counts against a
// quota: bytes (see usageOf) and inodes, each hard-linked inode once.
func Measure(dir string) (used, inodes int64, err error) {
	seen := map[uint64]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		used += usageOf(st)
		inodes++
		return nil
	})
	return used, inodes, err
}
