package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Label keys and values are containerd's CRI ones on purpose: both runtimes
// may share the k8s.io namespace (and tools such as nerdctl and crictl
// against containerd read them), so an image pulled by either one looks
// managed (and pinned) to the other.
const (
	LabelManaged       = "io.cri-containerd.image"
	LabelManagedValue  = "managed"
	LabelPinned        = "io.cri-containerd.pinned"
	LabelPinnedValue   = "pinned"
	defaultNamespace   = "k8s.io"
	defaultSnapshotter = "overlayfs"
)

// Options configures a Service.
type Options struct {
	// Snapshotter unpacks pulled images; containers must use the same one.
	// Default "overlayfs".
	Snapshotter string
	// RegistryConfigDir is a containerd-style hosts.toml tree:
	// <dir>/<host>[_port_]/hosts.toml, then <dir>/_default/hosts.toml.
	// Empty means every registry is reached directly over HTTPS.
	RegistryConfigDir string
	// Namespace is the containerd namespace of the images. Default "k8s.io"
	// (the one cAdvisor and containerd's CRI use).
	Namespace string
	// PinnedImages are references (normalised like pulls, e.g. the sandbox
	// image) reported with Image.pinned so kubelet's image GC keeps them.
	PinnedImages []string
	// Logger receives warnings about images that cannot be indexed; default
	// slog.Default().
	Logger *slog.Logger
}

// Image is one image as the runtime service needs it: an ID with every name
// it is known by, its config, and a containerd handle to create snapshots
// from.
type Image struct {
	// ID is "sha256:<config digest>": the value of PullImageResponse.image_ref,
	// Image.id, and what ContainerStatus.image_id must report.
	ID string
	// Name is a containerd image name of this image (the ID record when it
	// exists); CDImage is that record.
	Name        string
	RepoTags    []string
	RepoDigests []string
	// Size is the compressed size (manifest, config and layers), as CRI
	// defines Image.size.
	Size uint64
	// ChainID is the key of the image's top snapshot in Snapshotter.
	ChainID string
	// Spec is the OCI image config blob; Config is Spec.Config.
	Spec   imagespec.Image
	Config imagespec.ImageConfig
	Pinned bool
	// CDImage is bound to the Service's client and platform; use it with
	// containerd.WithNewSnapshot / WithImageConfig.
	CDImage containerd.Image
}

// Service implements the CRI ImageService on containerd and gives the
// runtime service image lookups. It is safe for concurrent use.
type Service struct {
	runtime.UnimplementedImageServiceServer

	client *containerd.Client
	images ctrimages.Store // client.ImageService(); a field so tests can fake it
	opts   Options
	log    *slog.Logger
	pinned map[string]bool // normalised pinned references
	store  *store

	// mu serialises every change of image records (containerd first, then
	// the index) and the read-through refresh of index misses. Without it a
	// refresh could re-insert a name a concurrent RemoveImage has just
	// deleted, and critest requires an image to be gone from ImageStatus as
	// soon as any of several concurrent RemoveImage calls returns.
	mu sync.Mutex

	pulls  flightGroup[Image]
	fsinfo fsInfoState
}

// New connects the service to client and loads the index from the images
// already in the namespace.
func New(ctx context.Context, client *containerd.Client, opts Options) (*Service, error) {
	if client == nil {
		return nil, errors.New("images: nil containerd client")
	}
	if opts.Snapshotter == "" {
		opts.Snapshotter = defaultSnapshotter
	}
	if opts.Namespace == "" {
		opts.Namespace = defaultNamespace
	}
	s := &Service{
		client: client,
		images: client.ImageService(),
		opts:   opts,
		log:    opts.Logger,
		pinned: map[string]bool{},
		store:  newStore(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	for _, p := range opts.PinnedImages {
		if p == "" {
			continue // an unset config value, not a reference
		}
		named, err := normalizeRef(p)
		if err != nil {
			return nil, fmt.Errorf("images: pinned image %q: %w", p, err)
		}
		s.pinned[named.String()] = true
	}
	if err := s.Sync(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// ctx puts the service's containerd namespace on a request context.
func (s *Service) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, s.opts.Namespace)
}

// Sync rebuilds the index from containerd. New calls it; it may also be
// called after images were changed behind the service's back (ctr, nerdctl).
// Names that cannot be read (missing content, foreign platforms) are logged
// and skipped rather than failing the start: one broken image must not take
// the whole node's runtime down.
func (s *Service) Sync(ctx context.Context) error {
	ctx = s.ctx(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()

	recs, err := s.images.List(ctx)
	if err != nil {
		return fmt.Errorf("images: list containerd images: %w", err)
	}
	fresh := newStore()
	memo := map[digest.Digest]*imageInfo{}
	for _, rec := range recs {
		info, err := s.loadInfo(ctx, rec, memo)
		if err != nil {
			s.log.Warn("images: skipping image that cannot be indexed", "name", rec.Name, "error", err)
			continue
		}
		fresh.put(rec, info)
	}
	// Give every image an ID record, as a pull does. It keeps an image
	// addressable and protected from GC by its ID when its tags are deleted
	// by another client, and makes CDImage stable.
	for _, v := range fresh.list() {
		if _, ok := fresh.lookupName(v.info.id); ok {
			continue
		}
		rec := ctrimages.Image{Name: v.info.id, Target: v.records[0].Target, Labels: s.labelsFor(v.names()...)}
		rec, err := s.createOrUpdate(ctx, rec)
		if err != nil {
			s.log.Warn("images: cannot create image ID record", "id", v.info.id, "error", err)
			continue
		}
		fresh.put(rec, v.info)
	}
	s.store.replace(fresh)
	return nil
}

// loadInfo reads what the index needs from an image's content. memo (keyed
// by manifest/index digest) avoids re-reading blobs for the several names a
// pulled image has.
func (s *Service) loadInfo(ctx context.Context, rec ctrimages.Image, memo map[digest.Digest]*imageInfo) (*imageInfo, error) {
	if info, ok := memo[rec.Target.Digest]; ok {
		return info, nil
	}
	img := containerd.NewImage(s.client, rec)
	desc, err := img.Config(ctx)
	if err != nil {
		return nil, fmt.Errorf("config descriptor: %w", err)
	}
	blob, err := content.ReadBlob(ctx, s.client.ContentStore(), desc)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", desc.Digest, err)
	}
	var spec imagespec.Image
	if err := json.Unmarshal(blob, &spec); err != nil {
		return nil, fmt.Errorf("decode config %s: %w", desc.Digest, err)
	}
	size, err := img.Size(ctx)
	if err != nil {
		return nil, fmt.Errorf("size: %w", err)
	}
	info := &imageInfo{
		id:      desc.Digest.String(),
		chainID: identity.ChainID(spec.RootFS.DiffIDs).String(),
		size:    size,
		spec:    spec,
	}
	if memo != nil {
		memo[rec.Target.Digest] = info
	}
	return info, nil
}

// labelsFor returns the labels of records written for an image known by
// names: managed always, pinned when any of the names is pinned (so the ID
// record of the sandbox image is pinned too, as in containerd).
func (s *Service) labelsFor(names ...string) map[string]string {
	l := map[string]string{LabelManaged: LabelManagedValue}
	for _, n := range names {
		if s.pinned[n] {
			l[LabelPinned] = LabelPinnedValue
			break
		}
	}
	return l
}

// createOrUpdate makes containerd image record rec exist with rec's target
// and labels. Existing labels other than ours are kept (another client may
// have its own), and the record is left alone when it already matches.
func (s *Service) createOrUpdate(ctx context.Context, rec ctrimages.Image) (ctrimages.Image, error) {
	is := s.images
	created, err := is.Create(ctx, rec)
	if err == nil {
		return created, nil
	}
	if !errdefs.IsAlreadyExists(err) {
		return ctrimages.Image{}, err
	}
	old, err := is.Get(ctx, rec.Name)
	if err != nil {
		return ctrimages.Image{}, err
	}
	var paths []string
	if old.Target.Digest != rec.Target.Digest {
		paths = append(paths, "target")
	}
	for k, v := range rec.Labels {
		if old.Labels[k] != v {
			paths = append(paths, "labels."+k)
		}
	}
	if len(paths) == 0 {
		return old, nil
	}
	return is.Update(ctx, rec, paths...)
}

// refresh re-reads one containerd name into the index: it is added, moved
// to its current ID, or dropped when containerd no longer has it. Callers
// hold s.mu.
func (s *Service) refresh(ctx context.Context, name string) error {
	rec, err := s.images.Get(ctx, name)
	if errdefs.IsNotFound(err) {
		s.store.drop(name)
		return nil
	}
	if err != nil {
		return err
	}
	// A record whose target did not move keeps its image: the info comes
	// from immutable content, so only the record (labels) is replaced.
	// Events for the service's own writes land here, and re-reading the
	// config and every layer size for each would be wasted.
	if old, info, ok := s.store.record(name); ok && old.Target.Digest == rec.Target.Digest {
		s.store.put(rec, info)
		return nil
	}
	info, err := s.loadInfo(ctx, rec, nil)
	if err != nil {
		// The name now points at content that cannot be read (a partial
		// import, a foreign platform): the old target is no longer what
		// containerd has under this name, so the name leaves the index
		// rather than keep resolving to the image it used to be.
		s.store.drop(name)
		return err
	}
	s.store.put(rec, info)
	return nil
}

// lookup resolves ref to an indexed image. On an index miss it asks
// containerd for the normalised name once (under s.mu), so that images
// added by other clients, e.g. `ctr -n k8s.io images import` of an
// air-gapped sandbox image, are found without a restart.
func (s *Service) lookup(ctx context.Context, ref string) (view, error) {
	id, err := s.store.resolve(ref)
	if errdefs.IsNotFound(err) {
		if name, nerr := s.containerdName(ref); nerr == nil {
			s.mu.Lock()
			if _, ok := s.store.lookupName(name); !ok {
				if rerr := s.refresh(ctx, name); rerr != nil {
					s.log.Debug("images: refresh on miss failed", "name", name, "error", rerr)
				}
			}
			s.mu.Unlock()
			id, err = s.store.resolve(ref)
		}
	}
	if err != nil {
		return view{}, err
	}
	v, ok := s.store.get(id)
	if !ok {
		return view{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return v, nil
}

// Get returns the image that ref designates: a tag or name ("busybox" is
// docker.io/library/busybox:latest), a repo digest, the full ID
// "sha256:…", or a unique ID prefix. A missing image gives an error for
// which errdefs.IsNotFound is true; an empty or ambiguous one,
// errdefs.IsInvalidArgument. Get does not pull.
func (s *Service) Get(ctx context.Context, ref string) (Image, error) {
	v, err := s.lookup(s.ctx(ctx), ref)
	if err != nil {
		return Image{}, err
	}
	return s.toImage(v), nil
}

// EnsurePulled returns the image ref, pulling it (anonymously, through the
// mirrors) when it is missing, and unpacking it when it is present but not
// unpacked (e.g. imported with ctr). For the sandbox image.
func (s *Service) EnsurePulled(ctx context.Context, ref string) (Image, error) {
	img, err := s.Get(ctx, ref)
	if err == nil {
		if err := s.EnsureUnpacked(ctx, img); err != nil {
			return Image{}, err
		}
		return img, nil
	}
	if !errdefs.IsNotFound(err) {
		return Image{}, err
	}
	return s.pull(ctx, ref, nil)
}

// EnsureUnpacked unpacks img into the snapshotter if its top snapshot is
// missing; a no-op (one Stat) for images pulled by this service. The
// runtime can call it before creating a container from an image it did
// not pull.
func (s *Service) EnsureUnpacked(ctx context.Context, img Image) error {
	if img.CDImage == nil {
		return fmt.Errorf("image %q has no containerd record: %w", img.ID, errdefs.ErrInvalidArgument)
	}
	ctx = s.ctx(ctx)
	ok, err := img.CDImage.IsUnpacked(ctx, s.opts.Snapshotter)
	if err != nil {
		return fmt.Errorf("check unpack of %s: %w", img.ID, err)
	}
	if ok {
		return nil
	}
	if err := img.CDImage.Unpack(ctx, s.opts.Snapshotter); err != nil {
		return fmt.Errorf("unpack %s: %w", img.ID, err)
	}
	return nil
}

// toImage turns an index view into the public Image.
func (s *Service) toImage(v view) Image {
	tags, digests := splitNames(v.names())
	rec := v.records[0]
	for _, r := range v.records {
		if r.Name == v.info.id {
			rec = r
			break
		}
	}
	return Image{
		ID:          v.info.id,
		Name:        rec.Name,
		RepoTags:    tags,
		RepoDigests: digests,
		Size:        uint64(max(v.info.size, 0)),
		ChainID:     v.info.chainID,
		Spec:        v.info.spec,
		Config:      v.info.spec.Config,
		Pinned:      s.isPinned(v),
		CDImage:     containerd.NewImage(s.client, rec),
	}
}

func (s *Service) isPinned(v view) bool {
	for _, r := range v.records {
		if s.pinned[r.Name] || r.Labels[LabelPinned] == LabelPinnedValue {
			return true
		}
	}
	return false
}

// grpcError converts an error of the containerd client (errdefs kinds) or
// a context error into a gRPC status, keeping statuses that already are one.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errdefs.IsDeadlineExceeded(err):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled) || errdefs.IsCanceled(err):
		code = codes.Canceled
	case isStatus(err):
		return err
	case errdefs.IsNotFound(err):
		code = codes.NotFound
	case errdefs.IsInvalidArgument(err):
		code = codes.InvalidArgument
	case errdefs.IsAlreadyExists(err):
		code = codes.AlreadyExists
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		code = codes.FailedPrecondition
	case errdefs.IsUnavailable(err):
		code = codes.Unavailable
	case errdefs.IsPermissionDenied(err):
		code = codes.PermissionDenied
	case errdefs.IsUnauthorized(err):
		code = codes.Unauthenticated
	case errdefs.IsResourceExhausted(err):
		code = codes.ResourceExhausted
	case errdefs.IsNotImplemented(err):
		code = codes.Unimplemented
	case errdefs.IsAborted(err):
		code = codes.Aborted
	}
	return status.Error(code, err.Error())
}

func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

// imageField validates the ImageSpec of a request and returns its image
// name. field is the request path used in messages ("image.image").
func imageField(spec *runtime.ImageSpec, field string) (string, error) {
	if spec.GetImage() == "" {
		return "", status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	return spec.GetImage(), nil
}

var _ runtime.ImageServiceServer = (*Service)(nil)
