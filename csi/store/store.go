// Package store keeps berth-csi's volumes and snapshots on one node: data
// directories under the backing root, and a JSON record per object under
// the state directory. Every path is built from a validated ID's hex part,
// never from a request string, so nothing a request says can leave the
// root.
package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berthdev/berth/internal/atomicfile"
)

// Kinds of object, and the prefix of their IDs.
const (
	KindVolume   = "vol"
	KindSnapshot = "snap"
)

// MaxNameLen bounds volume and snapshot names (CSI allows 128 bytes of ID;
// names get the same limit).
const MaxNameLen = 128

var (
	idRe   = regexp.MustCompile(`^(vol|snap)-([0-9a-f]{32})\.([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$`)
	nodeRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

// MaxNodeIDLen keeps IDs (5 + 32 + 1 + node) within CSI's 128 bytes.
const MaxNodeIDLen = 90

// ErrNotFound and ErrExists are the store's lookup and conflict errors.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("exists with different parameters")
)

// ID is a parsed volume or snapshot ID: kind-<32 hex>.<node>. The node
// part makes an ID say where its data lives, so any node can tell a
// foreign volume from a missing one.
type ID struct {
	Kind, Hex, Node string
}

func (id ID) String() string { return id.Kind + "-" + id.Hex + "." + id.Node }

// ParseID validates an ID of the given kind.
func ParseID(kind, s string) (ID, error) {
	if len(s) > MaxNameLen {
		return ID{}, fmt.Errorf("longer than %d bytes", MaxNameLen)
	}
	m := idRe.FindStringSubmatch(s)
	if m == nil || m[1] != kind {
		return ID{}, fmt.Errorf("%q is not a berth %s ID", s, kind)
	}
	return ID{Kind: m[1], Hex: m[2], Node: m[3]}, nil
}

// ValidNodeID reports whether a node ID can be part of IDs.
func ValidNodeID(node string) error {
	if len(node) > MaxNodeIDLen || !nodeRe.MatchString(node) {
		return fmt.Errorf("node ID %q must be a lower-case DNS name of at most %d bytes", node, MaxNodeIDLen)
	}
	return nil
}

// ValidName checks a volume or snapshot name.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("is longer than %d bytes", MaxNameLen)
	case strings.ContainsRune(name, 0):
		return errors.New("contains NUL")
	}
	return nil
}

// Volume is a volume's record.
type Volume struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Capacity   int64             `json:"capacity"`
	MaxInodes  int64             `json:"maxInodes"`
	Parameters map[string]string `json:"parameters,omitempty"`
	// Source is the snapshot or volume ID the volume was filled from.
	Source    string    `json:"source,omitempty"`
	Ephemeral bool      `json:"ephemeral,omitempty"`
	Created   time.Time `json:"created"`
	// Used and Inodes are the last usage the node plugin measured, kept
	// so that listings and a restarted plugin start from a known value.
	Used   int64 `json:"used"`
	Inodes int64 `json:"inodes"`
}

// Snapshot is a snapshot's record.
type Snapshot struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Source  string    `json:"source"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	Ready   bool      `json:"ready"`
}

// Store is one node's volumes and snapshots.
type Store struct {
	Root, State, Node string

	mu sync.Mutex // serialises creates and deletes; reads use the files
}

// Open creates the directory layout.
func Open(root, state, node string) (*Store, error) {
	if err := ValidNodeID(node); err != nil {
		return nil, err
	}
	for _, d := range []string{
		filepath.Join(root, "volumes"), filepath.Join(root, "snapshots"), filepath.Join(root, ".tmp"),
		filepath.Join(state, "volumes"), filepath.Join(state, "snapshots"),
	} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// Data directories are served to pods, which need to reach into them.
	os.Chmod(filepath.Join(root, "volumes"), 0o711)
	s := &Store{Root: root, State: state, Node: node}
	s.sweepTmp()
	return s, nil
}

// IDFor derives the ID of a name. Deriving it (rather than drawing a random
// one) makes a retried create after a crash find its own half-made volume.
func (s *Store) IDFor(kind, name string) ID {
	sum := sha256.Sum256([]byte(kind + "\x00" + name))
	return ID{Kind: kind, Hex: hex.EncodeToString(sum[:16]), Node: s.Node}
}

// DataDir is where an object's files live.
func (s *Store) DataDir(id ID) string {
	dir := "volumes"
	if id.Kind == KindSnapshot {
		dir = "snapshots"
	}
	return filepath.Join(s.Root, dir, id.Hex)
}

func (s *Store) recordPath(id ID) string {
	dir := "volumes"
	if id.Kind == KindSnapshot {
		dir = "snapshots"
	}
	return filepath.Join(s.State, dir, id.Hex+".json")
}

// Local reports whether the ID belongs to this node.
func (s *Store) Local(id ID) bool { return id.Node == s.Node }

// writeJSON replaces a record atomically and durably: a crash leaves the
// old record or the new one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, b, 0o600)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Volume reads a volume's record.
func (s *Store) Volume(id ID) (*Volume, error) {
	if !s.Local(id) || id.Kind != KindVolume {
		return nil, ErrNotFound
	}
	var v Volume
	if err := readJSON(s.recordPath(id), &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// SaveVolume rewrites a volume's record.
func (s *Store) SaveVolume(v *Volume) error {
	id, err := ParseID(KindVolume, v.ID)
	if err != nil {
		return err
	}
	return writeJSON(s.recordPath(id), v)
}

// Snapshot reads a snapshot's record.
func (s *Store) Snapshot(id ID) (*Snapshot, error) {
	if !s.Local(id) || id.Kind != KindSnapshot {
		return nil, ErrNotFound
	}
	var sn Snapshot
	if err := readJSON(s.recordPath(id), &sn); err != nil {
		return nil, err
	}
	return &sn, nil
}

// Volumes lists every volume record, sorted by ID.
func (s *Store) Volumes() ([]*Volume, error) {
	var out []*Volume
	err := s.each(KindVolume, func(b []byte) error {
		var v Volume
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		out = append(out, &v)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// Snapshots lists every snapshot record, sorted by ID.
func (s *Store) Snapshots() ([]*Snapshot, error) {
	var out []*Snapshot
	err := s.each(KindSnapshot, func(b []byte) error {
		var sn Snapshot
		if err := json.Unmarshal(b, &sn); err != nil {
			return err
		}
		out = append(out, &sn)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

func (s *Store) each(kind string, fn func([]byte) error) error {
	dir := "volumes"
	if kind == KindSnapshot {
		dir = "snapshots"
	}
	ents, err := os.ReadDir(filepath.Join(s.State, dir))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.State, dir, e.Name()))
		if err != nil {
			continue
		}
		if err := fn(b); err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
	}
	return nil
}

// CreateVolume makes the volume named v.Name, filled from fill when it is
// not nil. It is idempotent: the same name with the same capacity and
// source returns the existing record; a different one is ErrExists.
func (s *Store) CreateVolume(v Volume, fill func(dst string) error) (*Volume, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.IDFor(KindVolume, v.Name)
	v.ID = id.String()
	if old, err := s.Volume(id); err == nil {
		if old.Capacity < v.Capacity || old.Source != v.Source || old.Ephemeral != v.Ephemeral {
			return old, false, ErrExists
		}
		return old, false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	// Fill a temporary directory and rename it into place, so a crash
	// leaves either nothing or a whole volume.
	tmp, err := os.MkdirTemp(filepath.Join(s.Root, ".tmp"), id.Hex+"-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o777); err != nil {
		return nil, false, err
	}
	if fill != nil {
		if err := fill(tmp); err != nil {
			return nil, false, err
		}
	}
	dst := s.DataDir(id)
	os.RemoveAll(dst) // the leftovers of a crash between rename and record
	if err := os.Rename(tmp, dst); err != nil {
		return nil, false, err
	}
	v.Created = time.Now().UTC()
	if err := s.SaveVolume(&v); err != nil {
		os.RemoveAll(dst)
		return nil, false, err
	}
	return &v, true, nil
}

// DeleteVolume removes the data and then the record; a missing volume is
// not an error.
func (s *Store) DeleteVolume(id ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.RemoveAll(s.DataDir(id)); err != nil {
		return err
	}
	err := os.Remove(s.recordPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// CreateSnapshot copies a volume's data into a snapshot named name, with
// the same idempotency rules as CreateVolume.
func (s *Store) CreateSnapshot(name string, src ID, size int64) (*Snapshot, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.IDFor(KindSnapshot, name)
	if old, err := s.Snapshot(id); err == nil {
		if old.Source != src.String() {
			return old, false, ErrExists
		}
		return old, false, nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.Root, ".tmp"), id.Hex+"-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(tmp)
	if err := CopyTree(s.DataDir(src), tmp); err != nil {
		return nil, false, err
	}
	dst := s.DataDir(id)
	os.RemoveAll(dst)
	if err := os.Rename(tmp, dst); err != nil {
		return nil, false, err
	}
	sn := &Snapshot{ID: id.String(), Name: name, Source: src.String(), Size: size, Created: time.Now().UTC(), Ready: true}
	if err := writeJSON(s.recordPath(id), sn); err != nil {
		os.RemoveAll(dst)
		return nil, false, err
	}
	return sn, true, nil
}

// DeleteSnapshot removes a snapshot; a missing one is not an error.
func (s *Store) DeleteSnapshot(id ID) error {
	return s.DeleteVolume(id)
}

// sweepTmp removes half-made objects a crash left behind.
func (s *Store) sweepTmp() {
	ents, _ := os.ReadDir(filepath.Join(s.Root, ".tmp"))
	for _, e := range ents {
		os.RemoveAll(filepath.Join(s.Root, ".tmp", e.Name()))
	}
}
