package images

import (
	"context"
	"fmt"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
)

// Watch keeps the index in step with image records that other clients
// change — `ctr -n k8s.io images import`, `kind load`, nerdctl, another
// CRI — until ctx ends. Without it a tag re-imported with new content kept
// resolving to the image it was when first indexed, and CreateContainer
// then failed with "content digest not found" once containerd's GC had
// collected the old blobs.
//
// containerd publishes /images/create, /images/update and /images/delete
// (with the record's name) for every change of an image record, in every
// namespace; Watch re-reads each named record of its namespace
// (refresh), as containerd's own CRI follows these events. Whatever
// changed while not subscribed — before the first subscription, or while
// containerd restarted — is caught by a full Sync each time the
// subscription is (re)made, so an event can be lost without the index
// staying wrong.
func (s *Service) Watch(ctx context.Context) {
	ctx = s.ctx(ctx)
	filter := fmt.Sprintf(`namespace==%q,topic~="^/images/"`, s.opts.Namespace)
	for {
		sub, cancel := context.WithCancel(ctx)
		msgs, errs := s.client.Subscribe(sub, filter)
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("images: resync after subscribing to image events failed", "error", err)
		}
	loop:
		for {
			select {
			case <-ctx.Done():
				cancel()
				return
			case err := <-errs:
				if ctx.Err() == nil {
					s.log.Warn("images: containerd image event stream ended; resubscribing", "error", err)
				}
				break loop
			case env := <-msgs:
				s.handleEvent(ctx, env)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// handleEvent applies one image event to the index.
func (s *Service) handleEvent(ctx context.Context, env *events.Envelope) {
	if env == nil || env.Event == nil || env.Namespace != s.opts.Namespace {
		return
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		s.log.Debug("images: undecodable event", "topic", env.Topic, "error", err)
		return
	}
	var name string
	switch e := v.(type) {
	case *apievents.ImageCreate:
		name = e.Name
	case *apievents.ImageUpdate:
		name = e.Name
	case *apievents.ImageDelete:
		name = e.Name
	default:
		return
	}
	if name == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(ctx, name); err != nil {
		s.log.Warn("images: cannot index image after event", "topic", env.Topic, "name", name, "error", err)
		return
	}
	s.ensureIDRecord(ctx, name)
}

// ensureIDRecord gives the image that name now designates an ID record,
// as Sync does at start and a pull does: the image stays addressable by ID
// (kubelet creates containers by ID) and its content stays out of GC's
// reach when another client moves or deletes the tag, whether or not
// berth-cri restarted in between. Callers hold s.mu.
func (s *Service) ensureIDRecord(ctx context.Context, name string) {
	rec, info, ok := s.store.record(name)
	if !ok || isImageID(name) {
		return
	}
	if _, ok := s.store.lookupName(info.id); ok {
		return
	}
	v, _ := s.store.get(info.id)
	idRec := ctrimages.Image{Name: info.id, Target: rec.Target, Labels: s.labelsFor(v.names()...)}
	created, err := s.images.Create(ctx, idRec)
	switch {
	case err == nil:
		s.store.put(created, info)
	case errdefs.IsAlreadyExists(err):
		// Written by someone else since: index what is there.
		if err := s.refresh(ctx, info.id); err != nil {
			s.log.Warn("images: cannot index image ID record", "id", info.id, "error", err)
		}
	default:
		s.log.Warn("images: cannot create image ID record", "id", info.id, "error", err)
	}
}
