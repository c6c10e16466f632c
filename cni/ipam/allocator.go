package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
)

// ErrExhausted is wrapped by Allocate's error when every allocatable address
// of the pool is in use.
var ErrExhausted = errors.New("address pool exhausted")

// ErrCodeExhausted is the CNI error code (in the plugin-specific range, 100+)
// that Allocate's *types.Error carries when the pool is exhausted, so a
// runtime can tell "retry elsewhere" apart from generic failures.
const ErrCodeExhausted = 110

// maxNetworkNameLen matches the DNS-name limit the CNI spec suggests for
// network names; it also keeps <DataDir>/<network> well under PATH_MAX.
const maxNetworkNameLen = 253

// Attachment identifies the holder of an address: one interface of one
// container, as in the CNI spec's (containerID, ifname) pair.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// Allocator hands out addresses of one network. It is safe for concurrent
// use, and any number of Allocators in any number of processes may share a
// store directory.
type Allocator struct {
	network string
	dir     string
	pool    *pool
	// mu serialises this Allocator's operations so concurrent callers
	// queue here instead of each blocking an OS thread inside flock; the
	// flock still does the real cross-instance, cross-process exclusion.
	mu sync.Mutex
}

// cniError carries a *types.Error for the runtime together with the
// underlying cause, so callers can use errors.As for the CNI code and
// errors.Is for the cause (ErrExhausted, fs.ErrPermission, ...).
type cniError struct {
	te    *types.Error
	cause error
}

func (e *cniError) Error() string { return e.te.Error() }

func (e *cniError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.te}
	}
	return []error{e.te, e.cause}
}

func (a *Allocator) ioError(err error) error {
	return &cniError{
		te:    types.NewError(types.ErrIOFailure, fmt.Sprintf("ipam (network %q): %v", a.network, err), ""),
		cause: err,
	}
}

func validateNetworkName(name string) error {
	bad := func(why string) error {
		return invalidf("name: invalid network name %q: %s", name, why)
	}
	switch {
	case name == "":
		return invalidf("name: required")
	case name == "." || name == "..":
		return bad(`"." and ".." are not allowed`)
	case len(name) > maxNetworkNameLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxNetworkNameLen))
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '/':
			// The name becomes a path component under DataDir; a slash
			// would let a config write anywhere on the node.
			return bad(`must not contain "/"`)
		case 0:
			return bad("must not contain NUL")
		}
	}
	return nil
}

// New returns the Allocator for network, storing its state in
// <cfg.DataDir>/<network>. cfg is validated again (on a copy, so the caller's
// struct is not modified) because the allocator must never trust a pool it did
// not parse itself.
func New(network string, cfg *Config) (*Allocator, error) {
	if err := validateNetworkName(network); err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, invalidf("ipam: missing configuration")
	}
	c := *cfg
	p, err := c.parse()
	if err != nil {
		return nil, err
	}
	return &Allocator{
		network: network,
		dir:     filepath.Join(p.dataDir, network),
		pool:    p,
	}, nil
}

// Dir returns the directory holding this network's state.
func (a *Allocator) Dir() string { return a.dir }

func (a *Allocator) prefix(addr netip.Addr) netip.Prefix {
	return netip.PrefixFrom(addr, a.pool.subnet.Bits())
}

// withSession runs fn under the store's lock. With create the store is
// created if needed; without, a missing store runs fn with a nil session so
// lookups and releases see "nothing allocated" without creating directories.
func (a *Allocator) withSession(create, strict bool, fn func(s *session) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	lock, err := lockStore(a.dir, create)
	if err == errNoStore {
		return fn(nil)
	}
	if err != nil {
		return a.ioError(err)
	}
	defer lock.Close()
	s, err := openSession(a.dir, strict)
	if err != nil {
		return a.ioError(err)
	}
	return fn(s)
}

// Allocate returns the address for att, allocating one if att holds none.
// The prefix has the subnet's mask length; gw is the gateway.
func (a *Allocator) Allocate(att Attachment) (addr netip.Prefix, gw netip.Addr, err error) {
	if att.ContainerID == "" {
		// An empty container ID would be written as a record that every
		// later reader treats as corrupt.
		return netip.Prefix{}, netip.Addr{}, &cniError{te: types.NewError(types.ErrInvalidEnvironmentVariables, "ipam: attachment has no container ID", "")}
	}
	err = a.withSession(true, true, func(s *session) error {
		addr, err = a.allocate(s, att)
		return err
	})
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	return addr, a.pool.gateway, nil
}

func (a *Allocator) allocate(s *session, att Attachment) (netip.Prefix, error) {
	// Idempotency: a repeated ADD (the runtime retries after timeouts)
	// must get the same address. An address outside the current subnet
	// (the network was reconfigured) cannot be returned, so it is dropped
	// and a fresh one allocated. One still inside the subnet is kept even
	// if ranges or reserved changed since: the container is already using
	// it, and evicting it is the operator's call, via DEL.
	held, found, err := s.lookup(att)
	if err != nil {
		return netip.Prefix{}, a.ioError(err)
	}
	if found {
		if a.pool.subnet.Contains(held.addr) {
			return a.prefix(held.addr), nil
		}
		if err := os.Remove(filepath.Join(a.dir, held.name)); err != nil {
			return netip.Prefix{}, a.ioError(err)
		}
	}

	// The listing taken under the lock is the exact set of taken names, so
	// candidates are checked against it in memory instead of stat'ing each
	// one. Anything squatting on an address name blocks it, readable or
	// not. Only addresses the pool could hand out count towards
	// exhaustion; leftovers of an older config do not.
	used := make(map[netip.Addr]bool, len(s.names))
	inPool := 0
	for _, name := range s.names {
		ad, ok := addrFromFileName(name)
		if !ok || (found && name == held.name) {
			continue
		}
		used[ad] = true
		if a.pool.contains(ad) {
			inPool++
		}
	}
	if big.NewInt(int64(inPool)).Cmp(a.pool.size) >= 0 {
		if found {
			_ = syncDir(a.dir)
		}
		return netip.Prefix{}, a.exhausted(inPool)
	}

	// Round-robin from the address after the last one handed out. Since
	// fewer than size addresses are used, a free one is found within
	// inPool+1 steps, so this is cheap however large the subnet is.
	start := a.pool.after(readLastReserved(a.dir))
	cand := start
	for used[cand] {
		cand = a.pool.after(cand)
		if cand == start {
			return netip.Prefix{}, a.exhausted(inPool)
		}
	}

	data, err := json.Marshal(att)
	if err != nil {
		return netip.Prefix{}, a.ioError(err)
	}
	// Index entry first, address file second: a writer killed in between
	// leaves an entry pointing at nothing, which lookups ignore, never a
	// holder without an entry, which lookups would miss.
	if err := s.writeIndex(indexKey(att), indexEntry{att.ContainerID, att.IfName, cand.String()}); err != nil {
		return netip.Prefix{}, a.ioError(err)
	}
	name := addrFileName(cand)
	if err := writeAtomic(a.dir, filepath.Join(a.dir, name), data, true); err != nil {
		return netip.Prefix{}, a.ioError(err)
	}
	// The hint is best-effort: failing to update it only weakens
	// round-robin, and must not fail an allocation that already exists.
	_ = writeAtomic(a.dir, filepath.Join(a.dir, lastReservedName), []byte(cand.String()), false)
	if err := syncDir(a.dir); err != nil {
		// We cannot promise the allocation survives a crash, so do not
		// hand it out; try to leave the store as we found it.
		_ = os.Remove(filepath.Join(a.dir, name))
		return netip.Prefix{}, a.ioError(err)
	}
	return a.prefix(cand), nil
}

func (a *Allocator) exhausted(inUse int) error {
	return &cniError{
		te: types.NewError(ErrCodeExhausted,
			fmt.Sprintf("%s: no free address (%d of %s in use)", a.pool.desc, inUse, a.pool.size), ""),
		cause: ErrExhausted,
	}
}

// Get returns the address att holds in this network's subnet, if any.
func (a *Allocator) Get(att Attachment) (addr netip.Prefix, ok bool, err error) {
	err = a.withSession(false, false, func(s *session) error {
		if s == nil {
			return nil
		}
		r, found, err := s.lookup(att)
		if err != nil {
			return a.ioError(err)
		}
		if found && a.pool.subnet.Contains(r.addr) {
			addr, ok = a.prefix(r.addr), true
		}
		return nil
	})
	return addr, ok, err
}

// Release frees the address held by att. Releasing something that holds
// nothing, or a network that never allocated anything, succeeds: CNI DEL must
// be idempotent.
func (a *Allocator) Release(att Attachment) error {
	return a.withSession(false, true, func(s *session) error {
		if s == nil {
			return nil
		}
		r, found, err := s.lookup(att)
		if err != nil {
			return a.ioError(err)
		}
		if found {
			// No directory fsync: a kernel crash can at worst bring the
			// removed file back, and that address is then reclaimed by the
			// next GC (its attachment is gone), never handed out twice. The
			// fsync cost more than the rest of a DEL's file work.
			if err := os.Remove(filepath.Join(a.dir, r.name)); err != nil {
				return a.ioError(err)
			}
		}
		// After the address file, never before: see allocate.
		if err := s.removeIndex(att); err != nil {
			return a.ioError(err)
		}
		return nil
	})
}

// GC releases every allocation whose attachment is not in valid, including
// address files whose owner cannot be determined, and returns the released
// addresses in ascending order.
func (a *Allocator) GC(valid []Attachment) (released []netip.Addr, err error) {
	keep := make(map[Attachment]bool, len(valid))
	for _, v := range valid {
		keep[v] = true
	}
	err = a.withSession(false, true, func(s *session) error {
		if s == nil {
			return nil
		}
		recs, err := s.scan()
		if err != nil {
			return a.ioError(err)
		}
		type holding struct {
			att  Attachment
			addr netip.Addr
		}
		held := make(map[holding]bool, len(recs))
		for _, r := range recs {
			if !r.regular {
				continue
			}
			if r.valid && keep[r.att] {
				held[holding{r.att, r.addr}] = true
				continue
			}
			if err := os.Remove(filepath.Join(a.dir, r.name)); err != nil {
				return a.ioError(err)
			}
			released = append(released, r.addr)
		}
		if len(released) > 0 {
			if err := syncDir(a.dir); err != nil {
				return a.ioError(err)
			}
		}
		// Drop index entries of attachments that no longer hold anything
		// (including stale ones left by killed writers), again only after
		// their address files are gone.
		idx := filepath.Join(a.dir, indexDirName)
		names, err := readDirNames(idx)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return a.ioError(err)
		}
		for _, name := range names {
			if name == indexBootName {
				continue
			}
			if e, ok := readIndexFile(filepath.Join(idx, name)); ok {
				at := Attachment{e.ContainerID, e.IfName}
				ad, ok := addrFromFileName(e.Address)
				if ok && name == indexKey(at) && held[holding{at, ad}] {
					continue
				}
			}
			if err := os.Remove(filepath.Join(idx, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return a.ioError(err)
			}
		}
		return nil
	})
	return released, err
}

// List returns every allocated address with its holder. Addresses whose file
// could not be parsed are included with a zero Attachment: they are not
// available, and hiding them would make the pool look emptier than it is.
func (a *Allocator) List() (map[netip.Addr]Attachment, error) {
	out := make(map[netip.Addr]Attachment)
	err := a.withSession(false, false, func(s *session) error {
		if s == nil {
			return nil
		}
		recs, err := s.scan()
		if err != nil {
			return a.ioError(err)
		}
		for _, r := range recs {
			if r.regular {
				out[r.addr] = r.att
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Writable reports whether the network's state directory can be created and
// written, by creating, syncing and removing a probe file. CNI STATUS uses it
// so a node with a full or read-only disk reports itself not ready instead
// of failing every pod ADD.
func (a *Allocator) Writable() error {
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return a.ioError(err)
	}
	// The probe uses the temp prefix so that, should we die before
	// removing it, the next locked operation cleans it up. For the same
	// reason a concurrent operation may delete it under us; that is fine.
	f, err := os.CreateTemp(a.dir, tmpPrefix+"probe-*")
	if err != nil {
		return a.ioError(err)
	}
	name := f.Name()
	defer os.Remove(name)
	if _, err := f.Write([]byte("ok")); err != nil {
		f.Close()
		return a.ioError(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return a.ioError(err)
	}
	if err := f.Close(); err != nil {
		return a.ioError(err)
	}
	return nil
}
