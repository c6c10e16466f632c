package fusefs

import (
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// inode is one backing inode the kernel knows. Its FUSE node ID is its
// backing inode number (the root is node 1), which is what lets a new
// process serve a connection whose node IDs an earlier process handed out:
// an unknown ID is found again by inode number.
//
// fd is an O_PATH descriptor. Holding it keeps the backing inode alive
// while the kernel may still use its node ID, so an inode number cannot be
// reused under a live node ID.
type inode struct {
	ino  uint64
	fd   int
	mode uint32 // S_IFMT bits; they never change for an inode

	// guarded by FS.mu
	nlookup   uint64
	recovered bool // found again after a takeover: the next FORGET is final
	opens     int  // open file handles
	backingID int32
	backing   int // passthrough handles sharing backingID

	// mu serialises writes that may allocate (and truncate, fallocate)
	// against each other; writes inside the file's size take it shared.
	mu       sync.RWMutex
	size     int64
	charged  int64 // what this inode counts against the quota
	unlinked bool  // its last name is gone; the charge goes at last close
}

func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func statFd(fd int) (syscall.Stat_t, syscall.Errno) {
	var st syscall.Stat_t
	err := fstatat(fd, "", &st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
	return st, toErrno(err)
}

// fstatat fills a syscall.Stat_t, the type go-fuse's Attr takes; the
// syscall package has no fstatat of its own, and the two Stat_t types
// share one layout.
func fstatat(dirfd int, name string, st *syscall.Stat_t, flags int) error {
	return unix.Fstatat(dirfd, name, (*unix.Stat_t)(unsafe.Pointer(st)), flags)
}

func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
}

// nodeID maps a backing inode number to the FUSE node ID.
func (f *FS) nodeID(ino uint64) uint64 {
	if ino == f.rootIno {
		return fuse.FUSE_ROOT_ID
	}
	return ino
}

// node returns the inode for a FUSE node ID, finding it again in the
// backing tree when this process has not seen it (a takeover).
func (f *FS) node(id uint64) (*inode, syscall.Errno) {
	if id == fuse.FUSE_ROOT_ID {
		return f.root, 0
	}
	f.mu.RLock()
	in := f.inodes[id]
	f.mu.RUnlock()
	if in != nil {
		return in, 0
	}
	return f.recoverNode(id)
}

// recoverNode walks the backing tree for inode number id. The walk runs
// once per miss of the index, and its paths are opened beneath the root
// with no symlink resolution, so nothing outside the volume can be reached.
func (f *FS) recoverNode(id uint64) (*inode, syscall.Errno) {
	f.recoverMu.Lock()
	defer f.recoverMu.Unlock()
	f.mu.RLock()
	in := f.inodes[id]
	f.mu.RUnlock()
	if in != nil {
		return in, 0
	}
	rel, ok := f.index[id]
	if !ok {
		f.index = map[uint64]string{}
		filepath.WalkDir(f.rootPath, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				r, _ := filepath.Rel(f.rootPath, p)
				f.index[st.Ino] = r
			}
			return nil
		})
		f.recoveries.Add(1)
		if rel, ok = f.index[id]; !ok {
			return nil, syscall.ESTALE
		}
	}
	fd, err := unix.Openat2(f.root.fd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, syscall.ESTALE
	}
	st, errno := statFd(fd)
	if errno != 0 || st.Ino != id {
		unix.Close(fd)
		return nil, syscall.ESTALE
	}
	in = f.addInode(fd, &st, 0)
	f.mu.Lock()
	in.recovered = true
	f.mu.Unlock()
	return in, 0
}

// addInode records that the kernel gained lookups references to the inode
// behind fd. fd is consumed: closed if the inode is already known.
func (f *FS) addInode(fd int, st *syscall.Stat_t, lookups uint64) *inode {
	id := f.nodeID(st.Ino)
	f.mu.Lock()
	defer f.mu.Unlock()
	if in := f.inodes[id]; in != nil {
		unix.Close(fd)
		in.nlookup += lookups
		return in
	}
	in := &inode{ino: st.Ino, fd: fd, mode: st.Mode & syscall.S_IFMT, nlookup: lookups,
		size: st.Size, charged: usageOf(st)}
	f.inodes[id] = in
	return in
}

// Forget drops the kernel's references. A recovered inode's count is not
// known, and the kernel forgets a node only when it evicts it, so any
// FORGET for it is final.
func (f *FS) Forget(id, n uint64) {
	if id == fuse.FUSE_ROOT_ID {
		return
	}
	f.mu.Lock()
	in := f.inodes[id]
	if in == nil {
		f.mu.Unlock()
		return
	}
	if !in.recovered && in.nlookup > n {
		in.nlookup -= n
		f.mu.Unlock()
		return
	}
	delete(f.inodes, id)
	f.mu.Unlock()
	// An open handle still has its own descriptor; the O_PATH one can go.
	unix.Close(in.fd)
}

func (f *FS) fillEntry(in *inode, st *syscall.Stat_t, out *fuse.EntryOut) {
	out.NodeId = f.nodeID(st.Ino)
	out.Generation = 0
	out.Attr.FromStat(st)
	out.SetEntryTimeout(entryTimeout)
	out.SetAttrTimeout(entryTimeout)
}
