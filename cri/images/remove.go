package images

import (
	"context"
	"fmt"

	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveImage removes the image ref designates (tag, digest, ID or ID
// prefix) under all its names. Removing by one tag removes every tag and
// digest of the same ID: that is the CRI contract (api.proto RemoveImage),
// what containerd does, and what critest's "removing image by one tag
// should remove all tags" checks. A missing image is success, so that
// retries and concurrent removals all succeed.
func (s *Service) RemoveImage(ctx context.Context, req *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	ref, err := imageField(req.GetImage(), "image.image")
	if err != nil {
		return nil, err
	}
	if err := s.Remove(ctx, ref); err != nil {
		return nil, grpcError(err)
	}
	return &runtime.RemoveImageResponse{}, nil
}

// Remove is RemoveImage for Go callers; a missing image is not an error.
func (s *Service) Remove(ctx context.Context, ref string) error {
	ctx = s.ctx(ctx)
	// Held for the whole removal: a concurrent RemoveImage of the same image
	// waits, then finds nothing and returns, by which time the image is
	// gone from both containerd and the index (critest checks ImageStatus
	// right after each of five concurrent calls returns).
	s.mu.Lock()
	defer s.mu.Unlock()

	id, err := s.store.resolve(ref)
	if errdefs.IsNotFound(err) {
		// The index may lag behind containerd for names written by other
		// clients; remove what containerd has under that name.
		name, nerr := s.containerdName(ref)
		if nerr != nil {
			return nil
		}
		if rerr := s.refresh(ctx, name); rerr != nil {
			return fmt.Errorf("remove %q: %w", ref, rerr)
		}
		if id, err = s.store.resolve(ref); errdefs.IsNotFound(err) {
			return nil
		}
	}
	if err != nil {
		return err
	}
	v, ok := s.store.get(id)
	if !ok {
		return nil
	}
	is := s.images
	names := v.names()
	for i, name := range names {
		var opts []ctrimages.DeleteOpt
		if i == len(names)-1 {
			// Synchronous on the last name so containerd's GC has run
			// when the call returns: ImageFsInfo then reflects the space
			// given back, and a following pull does not race the
			// collection of the same blobs.
			opts = append(opts, ctrimages.SynchronousDelete())
		}
		if err := is.Delete(ctx, name, opts...); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove %q: delete %q: %w", ref, name, err)
		}
		s.store.drop(name)
	}
	return nil
}

// containerdName is the image name that ref would be stored under.
func (s *Service) containerdName(ref string) (string, error) {
	if isImageID(ref) {
		return ref, nil
	}
	named, err := normalizeRef(ref)
	if err != nil {
		return "", err
	}
	return named.String(), nil
}
