package cri

import (
	"context"
	"sync"
)

// inflight joins concurrent calls that create the same named object.
// kubelet retries RunPodSandbox and CreateContainer after its own deadline
// (2 min by default) while the first call may still be working; containerd's
// CRI answers such a retry with "name ... is reserved", which leaves the pod
// stuck until the first call ends. Here a retry waits for the first call and
// gets its result instead.
type inflight struct {
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done chan struct{}
	id   string
	err  error
}

func newInflight() *inflight { return &inflight{calls: map[string]*call{}} }

// do runs fn once per key at a time. fn runs on a context that survives the
// caller's cancellation, so a kubelet timeout never abandons a half-built
// sandbox; the caller itself stops waiting when its ctx ends.
func (f *inflight) do(ctx context.Context, key string, fn func(context.Context) (string, error)) (string, error) {
	f.mu.Lock()
	if c, ok := f.calls[key]; ok {
		f.mu.Unlock()
		return c.wait(ctx)
	}
	c := &call{done: make(chan struct{})}
	f.calls[key] = c
	f.mu.Unlock()

	go func() {
		c.id, c.err = fn(context.WithoutCancel(ctx))
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
	}()
	return c.wait(ctx)
}

func (c *call) wait(ctx context.Context) (string, error) {
	select {
	case <-c.done:
		return c.id, c.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
