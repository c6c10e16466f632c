package images

import (
	"maps"
	"slices"
	"sort"
	"sync"

	ctrimages "github.com/containerd/containerd/v2/core/images"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
)

// imageInfo is what the service knows about one image ID. It is derived from
// immutable content (manifest and config blobs), so it is computed once per
// manifest digest and shared by every name that points at that manifest.
type imageInfo struct {
	id      string // "sha256:<config digest>"
	chainID string // snapshot key of the unpacked top layer
	size    int64  // compressed size: manifest + config + layers
	spec    imagespec.Image
}

// entry groups every containerd image name whose config digest is the same
// image ID. CRI shows one Image per ID with all its tags and digests.
type entry struct {
	info    *imageInfo
	records map[string]ctrimages.Image // containerd name -> record
}

// store is the in-memory index behind every read RPC: ImageStatus and
// ListImages are called by kubelet far more often than images change, and
// answering them from containerd would cost several content-store reads per
// image. containerd stays the source of truth: the index is rebuilt from it
// on start and each mutating call of the service updates both, containerd
// first (see Service.mu).
type store struct {
	mu     sync.RWMutex
	byName map[string]string // containerd image name -> image ID
	byID   map[string]*entry
}

func newStore() *store {
	return &store{byName: map[string]string{}, byID: map[string]*entry{}}
}

// put records that containerd image rec has the given info; a name that
// moved to another ID (a re-pulled tag) leaves its old group, and an old
// group left without names disappears.
func (s *store) put(rec ctrimages.Image, info *imageInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byName[rec.Name]; ok && old != info.id {
		s.dropLocked(rec.Name)
	}
	e := s.byID[info.id]
	if e == nil {
		e = &entry{info: info, records: map[string]ctrimages.Image{}}
		s.byID[info.id] = e
	}
	e.records[rec.Name] = rec
	s.byName[rec.Name] = info.id
}

// drop forgets a containerd image name.
func (s *store) drop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(name)
}

func (s *store) dropLocked(name string) {
	id, ok := s.byName[name]
	if !ok {
		return
	}
	delete(s.byName, name)
	if e := s.byID[id]; e != nil {
		delete(e.records, name)
		if len(e.records) == 0 {
			delete(s.byID, id)
		}
	}
}

// lookupName returns the image ID a containerd name belongs to.
func (s *store) lookupName(name string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.byName[name]
	return id, ok
}

// record returns the indexed containerd record of a name and its info.
func (s *store) record(name string) (ctrimages.Image, *imageInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.byName[name]
	if !ok {
		return ctrimages.Image{}, nil, false
	}
	e := s.byID[id]
	if e == nil {
		return ctrimages.Image{}, nil, false
	}
	rec, ok := e.records[name]
	return rec, e.info, ok
}

// ids lists the known image IDs (for prefix resolution).
func (s *store) ids() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Collect(maps.Keys(s.byID))
}

// resolve maps a user reference (tag, digest, ID or ID prefix) to an ID.
func (s *store) resolve(ref string) (string, error) {
	return resolveID(ref, s.lookupName, s.ids())
}

// view is a consistent copy of one group, safe to use without the lock.
type view struct {
	info    *imageInfo
	records []ctrimages.Image // sorted by name
}

func (v view) names() []string {
	out := make([]string, len(v.records))
	for i, r := range v.records {
		out[i] = r.Name
	}
	return out
}

// get returns the group of an image ID.
func (s *store) get(id string) (view, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byID[id]
	if !ok {
		return view{}, false
	}
	return e.view(), true
}

// list returns every group, ordered by ID so that ListImages is stable.
func (s *store) list() []view {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]view, 0, len(s.byID))
	for _, e := range s.byID {
		out = append(out, e.view())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].info.id < out[j].info.id })
	return out
}

func (e *entry) view() view {
	recs := make([]ctrimages.Image, 0, len(e.records))
	for _, r := range e.records {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	return view{info: e.info, records: recs}
}

// replace swaps the whole index, used by a full resync from containerd.
func (s *store) replace(other *store) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byName, s.byID = other.byName, other.byID
}
