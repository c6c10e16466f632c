package ipam

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const (
	lockName         = "lock"
	lastReservedName = "last_reserved_ip"
	indexDirName     = "attachments"
	// indexBootName lives inside indexDirName, so the index costs the
	// store directory a single extra name.
	indexBootName = "boot_id"
	tmpPrefix     = ".tmp-"

	// maxRecordSize bounds what we read from a state file. A real one is
	// well under 1 KiB (CNI limits container IDs and interface names);
	// anything larger is damage, and must not make us slurp a huge file.
	maxRecordSize = 4096
)

// recordReads counts address-file reads, so tests can hold the hot paths to
// their promise of not reading every record.
var recordReads atomic.Int64

// errNoStore means the network's directory does not exist, i.e. nothing was
// ever allocated; read-only and releasing operations treat it as empty.
var errNoStore = errors.New("ipam: no state directory")

// bootID identifies the running kernel boot; see session.ensureIndex for why.
// It is a variable so tests can simulate a reboot.
var bootID = func() string {
	bootIDOnce.Do(func() {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err == nil {
			bootIDValue = strings.TrimSpace(string(b))
		}
	})
	return bootIDValue
}

var (
	bootIDOnce  sync.Once
	bootIDValue string
)

// addrFileName maps an address to its file name. IPv6 colons become
// underscores: colons are legal on Linux, but they break scp, tar's
// host:path syntax, PATH-like lists and Windows tools an operator may use to
// look at a copied store.
func addrFileName(a netip.Addr) string {
	return strings.ReplaceAll(a.String(), ":", "_")
}

// addrFromFileName is the inverse of addrFileName. Anything that is not an
// address (lock, last_reserved_ip, temp files, the index directory, an
// operator's notes) is reported as not an address file and left alone.
func addrFromFileName(name string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.ReplaceAll(name, "_", ":"))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// indexKey names an attachment's index file. Hashing keeps arbitrary
// container IDs and interface names out of file names entirely.
func indexKey(att Attachment) string {
	h := sha256.Sum256([]byte(att.ContainerID + "\x00" + att.IfName))
	return hex.EncodeToString(h[:])
}

// indexEntry is the content of an index file. It repeats the attachment so a
// reader can verify the entry is for whom it thinks it is.
type indexEntry struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
	Address     string `json:"address"`
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

// session is one locked operation on a store directory.
type session struct {
	dir string
	// names are the directory's entries (minus stale temp files) as
	// listed right after taking the lock. Under the lock nobody else can
	// change the directory, so this is the exact set of taken names.
	names []string
	// indexOK is false when the attachment index could not be brought up
	// to date (read-only media); lookups then fall back to a full scan.
	indexOK bool
	// strict sessions belong to mutating operations and may write.
	strict bool
}

// openSession lists dir, removes stale temp files and makes sure the index is
// trustworthy. The caller holds the lock. With strict, cleanup and index
// failures are errors (mutating callers are about to write); otherwise they
// only degrade to slower lookups, so reads keep working on read-only media.
func openSession(dir string, strict bool) (*session, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	// Readdirnames neither stats nor sorts: this runs on every operation
	// and a /16 can hold tens of thousands of names.
	all, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	s := &session{dir: dir, names: all[:0], strict: strict}
	for _, name := range all {
		if strings.HasPrefix(name, tmpPrefix) {
			// Writers only create temp files while holding the lock we
			// now hold, so this one belongs to a writer that died.
			if err := os.Remove(filepath.Join(dir, name)); err != nil && strict && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			continue
		}
		s.names = append(s.names, name)
	}
	if err := s.ensureIndex(); err != nil {
		if strict {
			return nil, err
		}
	} else {
		s.indexOK = true
	}
	return s, nil
}

// ensureIndex rebuilds the attachment index once per boot.
//
// The index (attachments/<hash> -> address) lets Allocate, Get and Release
// find an attachment's address by reading one file instead of every record.
// The address files remain the only truth; the index must merely never miss
// an attachment that holds an address. Writers guarantee that by writing the
// index entry before the address file and removing it after, so a killed
// process can only leave an entry pointing at nothing, which lookups verify
// and ignore. What a crashed *kernel* leaves is different: renames that were
// not fsynced can be lost or persisted in any order, and fsyncing the index
// too would double an allocation's cost. But a lost or reordered rename
// implies a reboot, so the index is rebuilt from the address files whenever
// the boot ID differs from the one recorded after the last rebuild. Within
// one boot the page cache is coherent, so the index needs no fsync at all.
func (s *session) ensureIndex() error {
	boot := bootID()
	if boot != "" {
		if b, _, err := readSmall(filepath.Join(s.dir, indexDirName, indexBootName)); err == nil && string(b) == boot {
			return nil
		}
	}
	recs, err := s.scan()
	if err != nil {
		return err
	}
	want := make(map[string]indexEntry, len(recs))
	for _, r := range recs {
		k := indexKey(r.att)
		// recs is sorted, so an attachment holding several addresses
		// (only possible by hand-editing) is indexed at the lowest;
		// the others stay reserved until GC.
		if _, dup := want[k]; r.valid && !dup {
			want[k] = indexEntry{r.att.ContainerID, r.att.IfName, r.addr.String()}
		}
	}
	idx := filepath.Join(s.dir, indexDirName)
	if err := os.MkdirAll(idx, 0o755); err != nil {
		return err
	}
	have, err := readDirNames(idx)
	if err != nil {
		return err
	}
	for _, name := range have {
		if name == indexBootName {
			continue
		}
		e, ok := want[name]
		if ok {
			if cur, ok2 := readIndexFile(filepath.Join(idx, name)); ok2 && cur == e {
				delete(want, name)
				continue
			}
		}
		if err := os.Remove(filepath.Join(idx, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for k, e := range want {
		if err := s.writeIndex(k, e); err != nil {
			return err
		}
	}
	if boot == "" {
		// Without a boot ID we cannot know when the index is safe to
		// trust, so it is rebuilt on every operation: slower, never wrong.
		return nil
	}
	return writeAtomic(s.dir, filepath.Join(idx, indexBootName), []byte(boot), false)
}

func (s *session) writeIndex(key string, e indexEntry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, indexDirName), 0o755); err != nil {
		return err
	}
	// The temp file lives in the store directory, not the index
	// directory, so the one listing taken per operation finds every
	// stale temp file.
	return writeAtomic(s.dir, filepath.Join(s.dir, indexDirName, key), data, false)
}

func (s *session) removeIndex(att Attachment) error {
	err := os.Remove(filepath.Join(s.dir, indexDirName, indexKey(att)))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// lookup finds the address file held by att, if any.
func (s *session) lookup(att Attachment) (record, bool, error) {
	if s.indexOK {
		data, tooBig, err := readSmall(filepath.Join(s.dir, indexDirName, indexKey(att)))
		if errors.Is(err, fs.ErrNotExist) {
			// The writers' ordering guarantees a holder has an entry.
			return record{}, false, nil
		}
		var e indexEntry
		if err == nil && !tooBig && json.Unmarshal(data, &e) == nil &&
			e.ContainerID == att.ContainerID && e.IfName == att.IfName {
			if addr, ok := addrFromFileName(e.Address); ok {
				r, err := s.readAddr(addr)
				if err != nil {
					return record{}, false, err
				}
				// A stale entry (the address was released, or given
				// to someone else, after a writer died) just means att
				// holds nothing.
				return r, r.valid && r.att == att, nil
			}
		}
		// A damaged entry: fall through to the slow path rather than
		// guess.
	}
	recs, err := s.scan()
	if err != nil {
		return record{}, false, err
	}
	for _, r := range recs {
		if r.valid && r.att == att {
			if s.indexOK && s.strict {
				// Repair the entry so the next lookup is fast again.
				// Best-effort: the slow path stays correct without it.
				_ = s.writeIndex(indexKey(att), indexEntry{att.ContainerID, att.IfName, r.addr.String()})
			}
			return r, true, nil
		}
	}
	return record{}, false, nil
}

// readAddr reads the record of one address; a missing file is a zero record.
func (s *session) readAddr(addr netip.Addr) (record, error) {
	name := addrFileName(addr)
	att, ok, err := readRecord(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, nil
	}
	if err != nil {
		return record{}, err
	}
	return record{addr: addr, name: name, att: att, valid: ok, regular: true}, nil
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

// scan reads every address file, sorted by address. It is the slow path,
// used by List, GC, index rebuilds and fallbacks.
func (s *session) scan() ([]record, error) {
	var recs []record
	for _, name := range s.names {
		addr, ok := addrFromFileName(name)
		if !ok {
			continue
		}
		path := filepath.Join(s.dir, name)
		fi, err := os.Lstat(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		r := record{addr: addr, name: name, regular: fi.Mode().IsRegular()}
		if r.regular {
			att, ok, err := readRecord(path)
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
	// Sort by address (not name, which puts 10.0.0.10 before 10.0.0.9) so
	// results come in the order humans and tests expect.
	slices.SortFunc(recs, func(x, y record) int { return x.addr.Compare(y.addr) })
	return recs, nil
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// readSmall reads a state file of at most maxRecordSize bytes; tooBig reports
// a larger (hence damaged) file. It uses raw syscalls because the slow paths
// read every record and os.Open costs several extra fcntl/epoll calls per
// file, more than the read itself. O_NOFOLLOW keeps a symlink planted under a
// state file's name from making us read elsewhere.
func readSmall(path string) (data []byte, tooBig bool, err error) {
	var fd int
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, maxRecordSize+1)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n > maxRecordSize {
		return nil, true, nil
	}
	return buf[:n], false, nil
}

// readRecord reads an address file. ok is false when the content is not a
// usable Attachment; err is only for I/O failures, which must not be
// mistaken for corruption (GC would delete a file it merely failed to read).
func readRecord(path string) (att Attachment, ok bool, err error) {
	recordReads.Add(1)
	data, tooBig, err := readSmall(path)
	if err != nil || tooBig {
		return Attachment{}, false, err
	}
	if err := json.Unmarshal(data, &att); err != nil || att.ContainerID == "" {
		return Attachment{}, false, nil
	}
	return att, true, nil
}

// readIndexFile reads an index entry; any failure (missing, damaged) is
// reported as !ok, since the caller has a fallback for all of them.
func readIndexFile(path string) (indexEntry, bool) {
	data, tooBig, err := readSmall(path)
	if err != nil || tooBig {
		return indexEntry{}, false
	}
	var e indexEntry
	if json.Unmarshal(data, &e) != nil || e.ContainerID == "" {
		return indexEntry{}, false
	}
	return e, true
}

// writeAtomic replaces path with data so that readers see either the old or
// the complete new content. The temp file is created in tmpDir, which must be
// on the same filesystem and is where stale temp files are looked for.
//
// With durable, the data is fsynced before the rename so that a crash cannot
// leave the new name on an empty file; files that are rebuilt or only hints
// skip it, as fsync is the dominant cost of an allocation. Either way the
// caller must fsync the directory to make the new name itself durable;
// splitting that out lets an allocation cover all its renames with one call.
func writeAtomic(tmpDir, path string, data []byte, durable bool) (err error) {
	f, err := os.CreateTemp(tmpDir, tmpPrefix+"*")
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
	if durable {
		if err = f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
	data, _, err := readSmall(filepath.Join(dir, lastReservedName))
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Addr{}
	}
	return a
}
