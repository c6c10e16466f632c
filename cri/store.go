package cri

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// store is the in-memory index of sandboxes or containers. It is a cache of
// what containerd holds: recover() rebuilds it on start.
type store[T any] struct {
	mu    sync.RWMutex
	items map[string]T
}

func newStore[T any]() *store[T] { return &store[T]{items: map[string]T{}} }

func (s *store[T]) add(id string, v T) {
	s.mu.Lock()
	s.items[id] = v
	s.mu.Unlock()
}

func (s *store[T]) delete(id string) {
	s.mu.Lock()
	delete(s.items, id)
	s.mu.Unlock()
}

// get resolves a full ID or a unique ID prefix, as crictl and kubelet's
// debugging tools pass truncated IDs.
func (s *store[T]) get(id string) (T, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if v, ok := s.items[id]; ok {
		return v, true
	}
	var zero T
	if id == "" {
		return zero, false
	}
	var found T
	n := 0
	for k, v := range s.items {
		if strings.HasPrefix(k, id) {
			found = v
			n++
		}
	}
	if n == 1 {
		return found, true
	}
	return zero, false
}

func (s *store[T]) list() []T {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.items))
	for k := range s.items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.items[k])
	}
	return out
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func notFound(kind, id string) error {
	return status.Errorf(codes.NotFound, "%s %q not found", kind, id)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func isNotFound(err error) bool { return err != nil && errdefs.IsNotFound(err) }

func ignoreNotFound(err error) error {
	if isNotFound(err) {
		return nil
	}
	return err
}

// lookupContainer resolves a request's container_id: InvalidArgument when
// it is empty, NotFound when no container has it.
func (s *Service) lookupContainer(id string) (*container, error) {
	if id == "" {
		return nil, invalid("container_id is required")
	}
	c, ok := s.containers.get(id)
	if !ok {
		return nil, notFound("container", id)
	}
	return c, nil
}

// lookupSandbox is lookupContainer for pod_sandbox_id.
func (s *Service) lookupSandbox(id string) (*sandbox, error) {
	if id == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	sb, ok := s.sandboxes.get(id)
	if !ok {
		return nil, notFound("pod sandbox", id)
	}
	return sb, nil
}
