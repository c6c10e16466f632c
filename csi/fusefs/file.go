package fusefs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// handle is an open file or directory. The low two bits of its number are
// the open's access mode, so a handle an earlier process issued can be
// reopened with the same access after a takeover.
type handle struct {
	fd          int
	in          *inode
	writable    bool
	passthrough bool
	dir         []fuse.DirEntry // directories: the entries read at open
}

const fhModeMask = 3

// openFlags strips what the server must not pass on: the kernel already
// did create/truncate, and O_APPEND would make pwrite ignore the offset the
// kernel computed. Reopening an inode goes through its /proc/self/fd
// link, which O_NOFOLLOW would refuse; symlinks never get that far.
func openFlags(flags uint32) int {
	return int(flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_APPEND|unix.O_NOCTTY) | unix.O_CLOEXEC
}

func (f *FS) addHandle(h *handle, mode int) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextFh += 4
	fh := f.nextFh | uint64(mode&fhModeMask)
	f.handles[fh] = h
	h.in.opens++
	return fh
}

// handle finds an open handle, reopening the inode when the handle came
// from an earlier process (a takeover).
func (f *FS) handle(fh, nodeID uint64) (*handle, syscall.Errno) {
	f.mu.RLock()
	h := f.handles[fh]
	f.mu.RUnlock()
	if h != nil {
		return h, 0
	}
	in, errno := f.node(nodeID)
	if errno != 0 {
		return nil, errno
	}
	if in.mode == syscall.S_IFLNK {
		return nil, syscall.EBADF
	}
	mode := int(fh & fhModeMask)
	var fd int
	var err error
	if in.mode == syscall.S_IFDIR {
		fd, err = unix.Open(procPath(in.fd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		fd, err = unix.Open(procPath(in.fd), mode|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, toErrno(err)
	}
	h = &handle{fd: fd, in: in, writable: mode != unix.O_RDONLY}
	if in.mode == syscall.S_IFDIR {
		h.dir, _ = readDir(fd)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.handles[fh]; old != nil {
		unix.Close(fd)
		return old, 0
	}
	f.handles[fh] = h
	in.opens++
	return h, 0
}

func (f *FS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	in, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if in.mode == syscall.S_IFLNK || in.mode == syscall.S_IFDIR {
		return fuse.Status(syscall.ELOOP)
	}
	fd, err := unix.Open(procPath(in.fd), openFlags(input.Flags), 0)
	if err != nil {
		return fuse.ToStatus(err)
	}
	return f.opened(in, fd, input.Flags, out)
}

// opened sets up the handle for a new descriptor. Read-only opens go
// through the kernel's passthrough when it is on. The kernel allows no
// other kind of open on an inode while one passthrough open is live, so a
// write open that finds passthrough readers must be passthrough too; its
// growth is then booked at close instead of refused at write, and the
// UnenforcedWriters counter says how often that happened.
func (f *FS) opened(in *inode, fd int, flags uint32, out *fuse.OpenOut) fuse.Status {
	mode := int(flags) & unix.O_ACCMODE
	h := &handle{fd: fd, in: in, writable: mode != unix.O_RDONLY}
	srv := f.server.Load()
	if srv != nil && f.opts.Passthrough && in.mode == syscall.S_IFREG {
		f.mu.Lock()
		want := !h.writable || in.backing > 0
		if want && in.backing == 0 && in.opens == 0 {
			id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
			if errno == 0 {
				in.backingID = id
			} else {
				f.ptWarn.Do(func() {
					f.log.Warn("FUSE passthrough unavailable; reads go through the server", "err", errno)
				})
			}
		}
		if want && in.backingID > 0 {
			in.backing++
			h.passthrough = true
			out.BackingID = in.backingID
			out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
			if h.writable {
				f.unenforced.Add(1)
			}
		}
		f.mu.Unlock()
	}
	if !h.passthrough && h.writable {
		// Direct I/O keeps writers out of the kernel's caching mode, which
		// would otherwise refuse later passthrough readers.
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES
	}
	out.Fh = f.addHandle(h, mode)
	return fuse.OK
}

func (f *FS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	parent, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if errno := f.quota.takeInode(); errno != 0 {
		return fuse.Status(errno)
	}
	fd, err := unix.Openat(parent.fd, name, openFlags(input.Flags)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, input.Mode)
	if err == unix.EEXIST && input.Flags&unix.O_EXCL == 0 {
		// Someone created it first; this is a plain open.
		f.quota.releaseInode()
		fd, err = unix.Openat(parent.fd, name, openFlags(input.Flags)|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fuse.ToStatus(err)
		}
	} else if err != nil {
		f.quota.releaseInode()
		return fuse.ToStatus(err)
	} else {
		owner(parent, parent.fd, name, &input.Caller)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fuse.ToStatus(err)
	}
	pfd, err := unix.Open(procPath(fd), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return fuse.ToStatus(err)
	}
	in := f.addInode(pfd, &st, 1)
	f.fillEntry(in, &st, &out.EntryOut)
	return f.opened(in, fd, input.Flags, &out.OpenOut)
}

func (f *FS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, errno := f.handle(input.Fh, input.NodeId)
	if errno != 0 {
		return nil, fuse.Status(errno)
	}
	f.bytesRead.Add(uint64(input.Size))
	return fuse.ReadResultFd(uintptr(h.fd), int64(input.Offset), int(input.Size)), fuse.OK
}

func (f *FS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	h, errno := f.handle(input.Fh, input.NodeId)
	if errno != 0 {
		return 0, fuse.Status(errno)
	}
	n, errno := f.write(h, int64(input.Offset), data)
	f.bytesWritten.Add(uint64(n))
	return uint32(n), fuse.Status(errno)
}

// write is the quota's write path. A write that ends inside the file's
// current size allocates nothing the quota has not already counted (a
// file counts at least its size), so it runs under a shared lock with no
// bookkeeping. A write that extends the file reserves the growth first; if
// only part fits, the write is shortened to what fits, and a write with
// nothing left to grant fails with ENOSPC, as on a full disk.
func (f *FS) write(h *handle, off int64, data [][]byte) (int, syscall.Errno) {
	var total int64
	for _, d := range data {
		total += int64(len(d))
	}
	in := h.in
	in.mu.RLock()
	if off+total <= in.size {
		n, err := unix.Pwritev(h.fd, data, off)
		in.mu.RUnlock()
		return n, toErrno(err)
	}
	in.mu.RUnlock()

	in.mu.Lock()
	defer in.mu.Unlock()
	end := off + total
	// The file counts max(allocated, size); growing its size to end can add
	// at most the rounded growth plus a block of filesystem metadata.
	want := roundUp(end) - roundUp(in.size) + blockSize
	granted, errno := f.quota.reserve(want, true)
	if errno != 0 {
		return 0, errno
	}
	if granted < want {
		fit := roundUp(in.size) + granted - blockSize - off
		if fit <= 0 {
			f.quota.adjust(-granted)
			return 0, syscall.ENOSPC
		}
		data = clip(data, fit)
	}
	n, err := unix.Pwritev(h.fd, data, off)
	f.settle(in, h.fd, granted)
	return n, toErrno(err)
}

// settle replaces a reservation with the measured change of the inode's
// charge. Callers hold in.mu.
func (f *FS) settle(in *inode, fd int, reserved int64) {
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil {
		f.quota.adjust(-reserved)
		return
	}
	in.size = st.Size
	if in.unlinked && st.Nlink == 0 && in.charged == 0 {
		f.quota.adjust(-reserved)
		return
	}
	now := usageOf(&st)
	f.quota.adjust(now - in.charged - reserved)
	in.charged = now
}

func clip(data [][]byte, n int64) [][]byte {
	out := make([][]byte, 0, len(data))
	for _, d := range data {
		if n <= 0 {
			break
		}
		if int64(len(d)) > n {
			d = d[:n]
		}
		out = append(out, d)
		n -= int64(len(d))
	}
	return out
}

// truncate sets a file's size. Growing it counts the new size against the
// quota even though the filesystem leaves it sparse.
func (f *FS) truncate(in *inode, size int64) syscall.Errno {
	if in.mode != syscall.S_IFREG {
		return syscall.EINVAL
	}
	fd, err := unix.Open(procPath(in.fd), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	in.mu.Lock()
	defer in.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return toErrno(err)
	}
	in.size = st.Size
	var reserved int64
	if size > st.Size {
		want := max(roundUp(size), st.Blocks*512) - usageOf(&st)
		r, errno := f.quota.reserve(want, false)
		if errno != 0 {
			return errno
		}
		reserved = r
	}
	err = unix.Ftruncate(fd, size)
	f.settle(in, fd, reserved)
	return toErrno(err)
}

func (f *FS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	h, errno := f.handle(input.Fh, input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	in := h.in
	in.mu.Lock()
	defer in.mu.Unlock()
	var reserved int64
	mode := input.Mode
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_COLLAPSE_RANGE) == 0 {
		// Worst case: every block in the range is new, and the size grows.
		var st syscall.Stat_t
		if err := syscall.Fstat(h.fd, &st); err != nil {
			return fuse.ToStatus(err)
		}
		size := st.Size
		if mode&unix.FALLOC_FL_KEEP_SIZE == 0 {
			size = max(size, int64(input.Offset+input.Length))
		}
		worst := max(st.Blocks*512+roundUp(int64(input.Length))+blockSize, roundUp(size))
		r, errno := f.quota.reserve(worst-usageOf(&st), false)
		if errno != 0 {
			return fuse.Status(errno)
		}
		reserved = r
	}
	err := unix.Fallocate(h.fd, mode, int64(input.Offset), int64(input.Length))
	f.settle(in, h.fd, reserved)
	return fuse.ToStatus(err)
}

func (f *FS) Lseek(cancel <-chan struct{}, input *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h, errno := f.handle(input.Fh, input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	off, err := unix.Seek(h.fd, int64(input.Offset), int(input.Whence))
	out.Offset = uint64(off)
	return fuse.ToStatus(err)
}

func (f *FS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status { return fuse.OK }

func (f *FS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	h, errno := f.handle(input.Fh, input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if input.FsyncFlags&1 != 0 {
		return fuse.ToStatus(unix.Fdatasync(h.fd))
	}
	return fuse.ToStatus(unix.Fsync(h.fd))
}

func (f *FS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	return f.Fsync(cancel, input)
}

func (f *FS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	f.mu.Lock()
	h := f.handles[input.Fh]
	delete(f.handles, input.Fh)
	if h == nil {
		// A handle of an earlier process that this one never used.
		f.mu.Unlock()
		return
	}
	in := h.in
	in.opens--
	last := in.opens == 0
	if h.passthrough {
		in.backing--
		if in.backing == 0 {
			if srv := f.server.Load(); srv != nil {
				srv.UnregisterBackingFd(in.backingID)
			}
			in.backingID = 0
		}
	}
	f.mu.Unlock()

	if h.writable || (last && in.unlinked) {
		in.mu.Lock()
		if h.writable {
			f.settle(in, h.fd, 0) // passthrough writers are booked here
		}
		if last && in.unlinked {
			var st syscall.Stat_t
			if syscall.Fstat(h.fd, &st) == nil && st.Nlink == 0 {
				f.quota.adjust(-in.charged)
				in.charged = 0
			}
		}
		in.mu.Unlock()
	}
	unix.Close(h.fd)
}

func (f *FS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	in, errno := f.node(input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	fd, err := unix.Open(procPath(in.fd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fuse.ToStatus(err)
	}
	entries, errno := readDir(fd)
	if errno != 0 {
		unix.Close(fd)
		return fuse.Status(errno)
	}
	out.Fh = f.addHandle(&handle{fd: fd, in: in, dir: entries}, unix.O_RDONLY)
	return fuse.OK
}

func (f *FS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	h, errno := f.handle(input.Fh, input.NodeId)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if input.Offset == 0 && h.dir == nil {
		h.dir, _ = readDir(h.fd)
	}
	for i := int(input.Offset); i < len(h.dir); i++ {
		e := h.dir[i]
		e.Off = uint64(i + 1)
		if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (f *FS) ReleaseDir(input *fuse.ReleaseIn) { f.Release(nil, input) }

// readDir reads a whole directory with getdents64.
func readDir(fd int) ([]fuse.DirEntry, syscall.Errno) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, toErrno(err)
	}
	var out []fuse.DirEntry
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, toErrno(err)
		}
		if n <= 0 {
			return out, 0
		}
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(b[16]) | int(b[17])<<8
			if reclen == 0 || reclen > len(b) {
				break
			}
			ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
				uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			typ := b[18]
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			out = append(out, fuse.DirEntry{Name: string(name), Ino: ino, Mode: uint32(typ) << 12})
			b = b[reclen:]
		}
	}
}
