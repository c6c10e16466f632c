package images

import (
	"context"
	"sync"
)

// flightGroup collapses concurrent calls with the same key into one
// execution (like x/sync/singleflight), with two differences that pulls
// need:
//
//   - the work runs on a context detached from any one caller, so a caller
//     that gives up (kubelet cancels, critest's 1 ms deadline) does not abort
//     a pull that other callers are still waiting for;
//   - when the last waiter gives up, the work is cancelled, so an abandoned
//     pull does not keep downloading, and the key is released at once so
//     that a new caller starts a fresh attempt instead of joining a dying one.
type flightGroup[T any] struct {
	mu    sync.Mutex
	calls map[string]*flight[T]
}

type flight[T any] struct {
	done    chan struct{}
	val     T
	err     error
	waiters int
	cancel  context.CancelFunc
}

// do runs fn once per key among concurrent callers and returns its result,
// or ctx.Err() if ctx ends first.
func (g *flightGroup[T]) do(ctx context.Context, key string, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*flight[T]{}
	}
	f, ok := g.calls[key]
	if !ok {
		// WithoutCancel keeps the values (namespace, logger, trace) of the
		// first caller but none of its deadline.
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight[T]{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = f
		go func() {
			v, err := fn(wctx)
			cancel()
			g.mu.Lock()
			f.val, f.err = v, err
			if g.calls[key] == f {
				delete(g.calls, key)
			}
			g.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			if g.calls[key] == f {
				delete(g.calls, key)
			}
		}
		g.mu.Unlock()
		return zero, ctx.Err()
	}
}
