package ipam

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	lockName         = "lock"
	lastReservedName = "last_reserved_ip"
	tmpPrefix        = ".tmp-"

	// maxRecordSize bounds what we read from an address file. A real one
	// is well under 1 KiB (CNI limits container IDs and interface names);
	// anything larger is damage, and must not make us slurp a huge file.
	maxRecordSize = 4096
)

// errNoStore means the network's directory does not exist, i.e. nothing was
// ever allocated; read-only and releasing operations treat it as empty.
var errNoStore = errors.New("ipam: no state directory")

// addrFileName maps an address to its file name. IPv6 colons become
// underscores: colons are legal on Linux, but they break scp, tar's
// host:path syntax, PATH-like lists and Windows tools an operator may use to
// look at a copied store.
func addrFileName(a netip.Addr) string {
	return strings.ReplaceAll(a.String(), ":", "_")
}

// addrFromFileName is the inverse of addrFileName. Anything that is not an
// address (lock, last_reserved_ip, temp files, an operator's notes) is
// reported as not an address file and left alone.
func addrFromFileName(name string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.ReplaceAll(name, "_", ":"))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// lockStore takes the exclusive flock of dir. With create, the directory is
// created first; without, a missing directory yields errNoStore so that
// lookups and releases neither fail nor leave empty directories behind.
func lockStore(dir string, create bool) (*os.File, error) {
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	// O_RDONLY is enough for flock and still works if the lock file
	// already exists on a read-only mount (lookups should not fail there).
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		if !create && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR)) {
			return nil, errNoStore
		}
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		// The Go runtime's preemption signals can interrupt the wait.
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "flock", Path: f.Name(), Err: err}
	}
	return f, nil
}

// record is one address file as found on disk.
type record struct {
	addr netip.Addr
	name string
	att  Attachment
	// valid is false when the file could not be parsed or is not a
	// regular file; the address stays taken but has no known owner.
	valid bool
	// regular is false for directories and the like squatting on an
	// address name. They block the address (rename cannot replace them)
	// but are never deleted by us: we did not create them.
	regular bool
}

// scanStore lists the address files of dir, which the caller must have
// locked. Stale temp files are removed on the way; with strict, failing to
// remove one is an error (mutating callers are about to write and want a
// clean directory), otherwise it is ignored so lookups work on read-only
// media.
func scanStore(dir string, strict bool) ([]record, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var recs []record
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			// Writers only create temp files while holding the lock we
			// now hold, so this one belongs to a writer that died.
			if err := os.Remove(filepath.Join(dir, name)); err != nil && strict && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			continue
		}
		addr, ok := addrFromFileName(name)
		if !ok {
			continue
		}
		r := record{addr: addr, name: name, regular: e.Type().IsRegular()}
		if r.regular {
			att, ok, err := readRecord(filepath.Join(dir, name))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return nil, err
			}
			r.att, r.valid = att, ok
		}
		recs = append(recs, r)
	}
	// ReadDir sorts by name, which puts 10.0.0.10 before 10.0.0.9; sort
	// by address so results are in an order humans and tests expect.
	for i := 1; i < len(recs); i++ {
		for j := i; j > 0 && recs[j].addr.Less(recs[j-1].addr); j-- {
			recs[j], recs[j-1] = recs[j-1], recs[j]
		}
	}
	return recs, nil
}

// readRecord reads an address file. ok is false when the content is not a
// usable Attachment; err is only for I/O failures, which must not be
// mistaken for corruption (GC would delete a file it merely failed to read).
func readRecord(path string) (att Attachment, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return Attachment{}, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if err != nil {
		return Attachment{}, false, err
	}
	if len(data) > maxRecordSize {
		return Attachment{}, false, nil
	}
	if err := json.Unmarshal(data, &att); err != nil || att.ContainerID == "" {
		return Attachment{}, false, nil
	}
	return att, true, nil
}

// writeAtomic replaces dir/name with data so that readers see either the old
// or the complete new content. With durable, the data is fsynced before the
// rename so that a crash cannot leave the new name on an empty file either;
// the round-robin hint skips that, as a damaged hint is harmless and fsync is
// the dominant cost of an allocation. The caller must fsync dir afterwards to
// make the new name itself durable; splitting that out lets an allocation
// make both of its renames durable with one directory fsync.
func writeAtomic(dir, name string, data []byte, durable bool) (err error) {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	// Without this fsync a crash after the rename could leave the new name
	// pointing at an empty file on filesystems that order data lazily.
	if durable {
		if err = f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readLastReserved returns the round-robin hint, or the zero Addr if it is
// missing or unreadable (in which case allocation starts at the pool start).
func readLastReserved(dir string) netip.Addr {
	data, err := os.ReadFile(filepath.Join(dir, lastReservedName))
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Addr{}
	}
	return a
}
