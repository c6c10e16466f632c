package cri

import (
	"context"
	"sync"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventHub fans container lifecycle events out to GetContainerEvents
// subscribers (kubelet's Evented PLEG). A slow subscriber loses events
// rather than stalling the runtime; kubelet relists periodically anyway.
type eventHub struct {
	mu    sync.Mutex
	subs  map[chan *runtime.ContainerEventResponse]struct{}
	names imageNamer // image names in the statuses events carry
}

func newEventHub(names imageNamer) *eventHub {
	return &eventHub{subs: map[chan *runtime.ContainerEventResponse]struct{}{}, names: names}
}

func (h *eventHub) subscribe() (chan *runtime.ContainerEventResponse, func()) {
	ch := make(chan *runtime.ContainerEventResponse, 1024)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// publish builds the event only when someone listens: building it takes
// the object's lock and copies its status.
func (h *eventHub) publish(build func() *runtime.ContainerEventResponse) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	ev := build()
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (h *eventHub) sandbox(sb *sandbox, t runtime.ContainerEventType) {
	h.publish(func() *runtime.ContainerEventResponse {
		return &runtime.ContainerEventResponse{ContainerId: sb.ID, ContainerEventType: t,
			CreatedAt: time.Now().UnixNano(), PodSandboxStatus: sandboxStatus(sb)}
	})
}

func (h *eventHub) container(c *container, t runtime.ContainerEventType) {
	h.publish(func() *runtime.ContainerEventResponse {
		return &runtime.ContainerEventResponse{ContainerId: c.ID, ContainerEventType: t,
			CreatedAt: time.Now().UnixNano(), ContainersStatuses: []*runtime.ContainerStatus{containerStatus(c, h.names)}}
	})
}

// GetContainerEvents streams lifecycle events until the client leaves.
func (s *Service) GetContainerEvents(r *runtime.GetEventsRequest, srv grpc.ServerStreamingServer[runtime.ContainerEventResponse]) error {
	ch, cancel := s.events.subscribe()
	defer cancel()
	for {
		select {
		case <-srv.Context().Done():
			return nil
		case <-s.stopCh:
			return nil
		case ev := <-ch:
			// Attach the pod status to container events, as kubelet's
			// Evented PLEG reads it from the event.
			if ev.PodSandboxStatus == nil && len(ev.ContainersStatuses) == 1 {
				if c, ok := s.containers.get(ev.ContainerId); ok {
					if sb, ok := s.sandboxes.get(c.SandboxID); ok {
						ev.PodSandboxStatus = sandboxStatus(sb)
					}
				}
			}
			if err := srv.Send(ev); err != nil {
				return err
			}
		}
	}
}

// watchOOM marks containers whose cgroup hit its memory limit, so their
// exit is reported as OOMKilled. The exit itself comes from the task's
// Wait channel.
func (s *Service) watchOOM() {
	for {
		ctx, cancel := context.WithCancel(s.nsCtx(context.Background()))
		msgs, errs := s.client.Subscribe(ctx, `topic=="/tasks/oom"`)
	loop:
		for {
			select {
			case <-s.stopCh:
				cancel()
				return
			case err := <-errs:
				if err != nil {
					s.log.Warn("containerd event stream ended; resubscribing", "err", err)
				}
				break loop
			case env := <-msgs:
				if env == nil || env.Event == nil {
					continue
				}
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				if oom, ok := v.(*apievents.TaskOOM); ok {
					if c, ok := s.containers.get(oom.ContainerID); ok && c.ID == oom.ContainerID {
						c.mu.Lock()
						c.oom = true
						c.mu.Unlock()
						s.log.Info("container OOM", "container", c.ID)
					}
				}
			}
		}
		cancel()
		select {
		case <-s.stopCh:
			return
		case <-time.After(time.Second):
		}
	}
}
