// Package images is berth-cri's CRI ImageService on containerd, plus the
// image lookups the runtime service needs.
//
// # Model
//
// An image is identified by its ID, "sha256:<digest of the config blob>".
// A pull stores up to three containerd image records (names) pointing at the
// same manifest, as containerd's own CRI does: the repo tag
// ("registry.k8s.io/pause:3.10"), the repo digest ("registry.k8s.io/pause@sha256:<manifest>")
// and the ID itself. The ID is what PullImage returns and what Image.id,
// ContainerStatus.image_id and Container.image_id must report (critest
// "Image Identifier Consistency"). Records carry containerd's CRI labels
// (io.cri-containerd.image=managed, io.cri-containerd.pinned=pinned), so the
// k8s.io namespace can be shared with containerd's CRI and its tools.
//
// containerd is the source of truth. The service keeps an in-memory index
// of the records grouped by ID (store.go), rebuilt from containerd by New
// and Sync and updated by the service's own pulls and removals (containerd
// first, then the index, under one mutex). A lookup that misses the index
// asks containerd once for that name, so images imported by other clients
// (ctr, nerdctl) are found without a restart; ListImages only shows what
// the index has.
//
// # API
//
//	func New(ctx context.Context, client *containerd.Client, opts Options) (*Service, error)
//
// *Service implements runtime.ImageServiceServer: PullImage, ImageStatus,
// ListImages, StreamImages, RemoveImage, ImageFsInfo. For the runtime
// service:
//
//	func (s *Service) Get(ctx context.Context, ref string) (Image, error)          // tag, digest, ID or ID prefix; errdefs.IsNotFound when absent
//	func (s *Service) EnsurePulled(ctx context.Context, ref string) (Image, error) // Get, else pull (sandbox image); unpacks if needed
//	func (s *Service) EnsureUnpacked(ctx context.Context, img Image) error         // unpack an image another client imported
//	func (s *Service) Remove(ctx context.Context, ref string) error                // RemoveImage for Go callers
//	func (s *Service) Sync(ctx context.Context) error                              // rebuild the index from containerd
//
// # Registry access
//
// Pulls run in berth (client.Pull with unpack), not in containerd's
// transfer service, and resolve registries through a containerd hosts.toml
// tree (Options.RegistryConfigDir), so mirrors are configured exactly as for
// containerd. CRI AuthConfig maps to the docker authorizer: username and
// password, identity_token (OAuth refresh token), auth (base64 "user:pass"),
// and registry_token (sent as a bearer token). A server_address restricts
// credentials to that registry; mirrors do not receive them.
//
// Concurrent pulls of one reference with the same credentials share one
// download. The download survives a caller that gives up as long as
// another caller still waits, and is cancelled when none does.
package images
