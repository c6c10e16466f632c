package store

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// CopyTree copies src into the existing directory dst, keeping modes,
// owners, times, symlinks, hard links and holes. Regular files are cloned
// with FICLONE where the filesystem shares extents (btrfs, xfs with
// reflink), which makes snapshots and clones instant; elsewhere they are
// copied, and the copy is independent either way.
func CopyTree(src, dst string) error {
	links := map[uint64]string{}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		switch {
		case rel == ".":
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, target); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if st.Nlink > 1 {
				if first, ok := links[st.Ino]; ok {
					return os.Link(first, target)
				}
				links[st.Ino] = target
			}
			if err := copyFile(p, target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode()&(fs.ModeNamedPipe|fs.ModeSocket) != 0:
			if err := unix.Mknod(target, st.Mode, 0); err != nil {
				return err
			}
		default:
			return nil // devices are never created on volumes
		}
		if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			// chown clears setuid/setgid; put the full mode back.
			if err := os.Chmod(target, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
		return nil
	}
	return copyData(in, out)
}

// copyData copies with SEEK_DATA/SEEK_HOLE so sparse files stay sparse.
func copyData(in, out *os.File) error {
	info, err := in.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	var off int64
	for off < size {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // the rest is a hole
		}
		if err != nil {
			// No SEEK_DATA here: copy everything.
			data = off
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return out.Truncate(size)
}
