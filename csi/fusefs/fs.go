package fusefs

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// entryTimeout is how long the kernel may cache names and attributes.
// Only this server changes the backing tree while it is mounted, and the
// kernel refreshes sizes from write replies, so a short cache is safe.
const entryTimeout = 2 * time.Second

// Options configure one volume's filesystem.
type Options struct {
	// Passthrough lets read-only opens go straight to the backing file in
	// the kernel (FUSE passthrough, Linux 6.9+). Writes always come through
	// the server so that they can be held to the quota.
	Passthrough bool
	Logger      *slog.Logger
}

// Stats are the volume's I/O counters.
type Stats struct {
	BytesRead, BytesWritten uint64
	Recoveries              uint64 // backing-tree walks after a takeover
	UnenforcedWriters       uint64 // write opens forced into passthrough
}

// FS is the RawFileSystem of one volume.
type FS struct {
	fuse.RawFileSystem

	rootPath string
	root     *inode
	rootIno  uint64
	quota    *Quota
	opts     Options
	log      *slog.Logger
	server   atomic.Pointer[fuse.Server]

	// mu guards the tables; every request looks up its node and handle,
	// so lookups share it and only changes take it exclusively.
	mu      sync.RWMutex
	inodes  map[uint64]*inode
	handles map[uint64]*handle
	nextFh  uint64

	ptWarn    sync.Once
	recoverMu sync.Mutex
	index     map[uint64]string

	bytesRead, bytesWritten, recoveries, unenforced atomic.Uint64
}

// New opens the backing directory. usage and inodes are the quota's
// starting point, measured by the caller (see Measure).
func New(backing string, q *Quota, opts Options) (*FS, error) {
	fd, err := unix.Open(backing, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open backing directory: %w", err)
	}
	st, errno := statFd(fd)
	if errno != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("stat backing directory: %w", errno)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	f := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		rootPath:      backing,
		rootIno:       st.Ino,
		quota:         q,
		opts:          opts,
		log:           log,
		inodes:        map[uint64]*inode{},
		handles:       map[uint64]*handle{},
		// Handles of an earlier process may still be in the kernel's
		// files; start this process's numbering far from theirs.
		nextFh: uint64(time.Now().UnixMilli()) << 16,
	}
	f.root = &inode{ino: st.Ino, fd: fd, mode: syscall.S_IFDIR, charged: usageOf(&st)}
	return f, nil
}

// Stats returns the I/O counters.
func (f *FS) Stats() Stats {
	return Stats{BytesRead: f.bytesRead.Load(), BytesWritten: f.bytesWritten.Load(),
		Recoveries: f.recoveries.Load(), UnenforcedWriters: f.unenforced.Load()}
}

// Quota returns the volume's quota.
func (f *FS) Quota() *Quota { return f.quota }

// Close releases the descriptors of every known inode and handle; call it
// after the server has stopped.
func (f *FS) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, in := range f.inodes {
		unix.Close(in.fd)
		delete(f.inodes, id)
	}
	for fh, h := range f.handles {
		if h.fd >= 0 {
			unix.Close(h.fd)
		}
		delete(f.handles, fh)
	}
	unix.Close(f.root.fd)
}

func (f *FS) String() string { return "berth-csi:" + f.rootPath }

func (f *FS) Init(s *fuse.Server) { f.server.Store(s) }

func (f *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	parent, errno := f.node(h.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	return f.lookupAt(parent, name, out)
}

func (f *FS) lookupAt(parent *inode, name string, out *fuse.EntryOut) fuse.Status {
	fd, err := unix.Openat(parent.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fuse.ToStatus(err)
	}
	st, errno := statFd(fd)
	if errno != 0 {
		unix.Close(fd)
		return fuse.Status(errno)
	}
	if st.Ino == fuse.FUSE_ROOT_ID && st.Ino != f.rootIno {
		// Node 1 is the root's; no real filesystem gives a file inode 1.
		unix.Close(fd)
		return fuse.EIO
	}
	in := f.addInode(fd, &st, 1)
	f.fillEntry(in, &st, out)
	return fuse.OK
}

func (f *FS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	in, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	return attrOut(in, out)
}

// attrOut answers with the inode's current attributes.
func attrOut(in *inode, out *fuse.AttrOut) fuse.Status {
	st, errno := statFd(in.fd)
	if errno != 0 {
		return fuse.Status(errno)
	}
	out.Attr.FromStat(&st)
	out.SetTimeout(entryTimeout)
	return fuse.OK
}

func (f *FS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	in, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if m, ok := input.GetMode(); ok {
		if in.mode == syscall.S_IFLNK {
			return fuse.Status(syscall.EOPNOTSUPP)
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, procPath(in.fd), m&07777, 0); err != nil {
			return fuse.ToStatus(err)
		}
	}
	uid, uok := input.GetUID()
	gid, gok := input.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := unix.Fchownat(in.fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fuse.ToStatus(err)
		}
	}
	if size, ok := input.GetSize(); ok {
		if errno := f.truncate(in, int64(size)); errno != 0 {
			return fuse.Status(errno)
		}
	}
	mtime, mok := input.GetMTime()
	atime, aok := input.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		if in.mode != syscall.S_IFLNK {
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(in.fd), ts, 0); err != nil {
				return fuse.ToStatus(err)
			}
		}
	}
	return attrOut(in, out)
}

// owner gives a new inode to the caller, as a kernel filesystem would. A
// setgid parent keeps its group, which is how fsGroup directories work.
func owner(parent *inode, fd int, name string, c *fuse.Caller) {
	if c.Uid == 0 && c.Gid == 0 {
		return
	}
	gid := int(c.Gid)
	if pst, errno := statFd(parent.fd); errno == 0 && pst.Mode&syscall.S_ISGID != 0 {
		gid = -1
	}
	unix.Fchownat(fd, name, int(c.Uid), gid, unix.AT_SYMLINK_NOFOLLOW)
}

// created finishes a create-like call: the new inode is charged, owned by
// the caller and looked up.
func (f *FS) created(parent *inode, name string, c *fuse.Caller, out *fuse.EntryOut) fuse.Status {
	owner(parent, parent.fd, name, c)
	st := f.lookupAt(parent, name, out)
	if st.Ok() {
		f.quota.adjust(usageOf(statOut(out)))
	}
	return st
}

func statOut(out *fuse.EntryOut) *syscall.Stat_t {
	return &syscall.Stat_t{Mode: out.Mode, Size: int64(out.Size), Blocks: int64(out.Blocks)}
}

func (f *FS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	parent, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if errno := f.quota.takeInode(); errno != 0 {
		return fuse.Status(errno)
	}
	// A directory takes a block; refuse it when not even that is left.
	if _, errno := f.quota.reserve(blockSize, false); errno != 0 {
		f.quota.releaseInode()
		return fuse.Status(errno)
	}
	f.quota.adjust(-blockSize)
	if err := unix.Mkdirat(parent.fd, name, input.Mode); err != nil {
		f.quota.releaseInode()
		return fuse.ToStatus(err)
	}
	return f.created(parent, name, &input.Caller, out)
}

func (f *FS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	parent, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	switch input.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFIFO, syscall.S_IFSOCK:
	default:
		// Device nodes on a volume would open host devices.
		return fuse.EPERM
	}
	if errno := f.quota.takeInode(); errno != 0 {
		return fuse.Status(errno)
	}
	if err := unix.Mknodat(parent.fd, name, input.Mode, 0); err != nil {
		f.quota.releaseInode()
		return fuse.ToStatus(err)
	}
	return f.created(parent, name, &input.Caller, out)
}

func (f *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	parent, errno := f.node(h.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if errno := f.quota.takeInode(); errno != 0 {
		return fuse.Status(errno)
	}
	if err := unix.Symlinkat(target, parent.fd, name); err != nil {
		f.quota.releaseInode()
		return fuse.ToStatus(err)
	}
	return f.created(parent, name, &h.Caller, out)
}

func (f *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	in, errno := f.node(h.NodeId)
	if errno != 0 {
		return nil, fuse.Status(errno)
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(in.fd, "", buf)
	if err != nil {
		return nil, fuse.ToStatus(err)
	}
	return buf[:n], fuse.OK
}

func (f *FS) Link(cancel <-chan struct{}, input *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	parent, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	old, errno := f.node(input.Oldnodeid)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if err := unix.Linkat(unix.AT_FDCWD, procPath(old.fd), parent.fd, name, unix.AT_SYMLINK_FOLLOW); err != nil {
		return fuse.ToStatus(err)
	}
	return f.lookupAt(parent, name, out)
}

// dropName books the removal of a name whose inode had st before. When it
// was the last name, the inode's charge goes now, or at its last close.
func (f *FS) dropName(st *syscall.Stat_t) {
	isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if !isDir && st.Nlink > 1 {
		return
	}
	f.quota.releaseInode()
	f.mu.Lock()
	in := f.inodes[f.nodeID(st.Ino)]
	if in != nil && in.opens > 0 {
		in.unlinked = true
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	charge := usageOf(st)
	if in != nil {
		in.mu.Lock()
		charge, in.charged = in.charged, 0
		in.mu.Unlock()
	}
	f.quota.adjust(-charge)
}

func (f *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.remove(h.NodeId, name, 0)
}

func (f *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.remove(h.NodeId, name, unix.AT_REMOVEDIR)
}

func (f *FS) remove(dir uint64, name string, flags int) fuse.Status {
	parent, errno := f.node(dir)
	if errno != 0 {
		return fuse.Status(errno)
	}
	var st syscall.Stat_t
	if err := fstatat(parent.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fuse.ToStatus(err)
	}
	if err := unix.Unlinkat(parent.fd, name, flags); err != nil {
		return fuse.ToStatus(err)
	}
	f.dropName(&st)
	return fuse.OK
}

func (f *FS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName, newName string) fuse.Status {
	src, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	dst, errno := f.node(input.Newdir)
	if errno != 0 {
		return fuse.Status(errno)
	}
	var victim syscall.Stat_t
	replaced := input.Flags&unix.RENAME_EXCHANGE == 0 &&
		fstatat(dst.fd, newName, &victim, unix.AT_SYMLINK_NOFOLLOW) == nil
	if err := unix.Renameat2(src.fd, oldName, dst.fd, newName, uint(input.Flags)); err != nil {
		return fuse.ToStatus(err)
	}
	if replaced {
		var moved syscall.Stat_t
		if fstatat(dst.fd, newName, &moved, unix.AT_SYMLINK_NOFOLLOW) == nil && moved.Ino != victim.Ino {
			f.dropName(&victim)
		}
	}
	return fuse.OK
}

func (f *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	used, capacity, inodes, maxInodes := f.quota.Usage()
	out.Bsize = blockSize
	out.Frsize = blockSize
	out.NameLen = 255
	out.Blocks = uint64(capacity / blockSize)
	free := max(capacity-used, 0) / blockSize
	out.Bfree, out.Bavail = uint64(free), uint64(free)
	out.Files = uint64(maxInodes)
	out.Ffree = uint64(max(maxInodes-inodes, 0))
	return fuse.OK
}

func (f *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	in, errno := f.node(h.NodeId)
	if errno != 0 {
		return 0, fuse.Status(errno)
	}
	if in.mode == syscall.S_IFLNK {
		return 0, fuse.ENOATTR
	}
	n, err := unix.Getxattr(procPath(in.fd), attr, dest)
	return uint32(n), fuse.ToStatus(err)
}

func (f *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	in, errno := f.node(h.NodeId)
	if errno != 0 {
		return 0, fuse.Status(errno)
	}
	if in.mode == syscall.S_IFLNK {
		return 0, fuse.OK
	}
	n, err := unix.Listxattr(procPath(in.fd), dest)
	return uint32(n), fuse.ToStatus(err)
}

func (f *FS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	in, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if in.mode == syscall.S_IFLNK {
		return fuse.EPERM
	}
	return fuse.ToStatus(unix.Setxattr(procPath(in.fd), attr, data, int(input.Flags)))
}

func (f *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	in, errno := f.node(h.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if in.mode == syscall.S_IFLNK {
		return fuse.EPERM
	}
	return fuse.ToStatus(unix.Removexattr(procPath(in.fd), attr))
}
