package images

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageStatus reports one image by tag, digest, ID or ID prefix. A missing
// image is not an error: kubelet asks before every pull, and the CRI
// contract is an empty response.
func (s *Service) ImageStatus(ctx context.Context, req *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	ref, err := imageField(req.GetImage(), "image.image")
	if err != nil {
		return nil, err
	}
	v, err := s.lookup(s.ctx(ctx), ref)
	if errdefs.IsNotFound(err) {
		return &runtime.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &runtime.ImageStatusResponse{Image: s.toCRIImage(v)}
	if req.GetVerbose() {
		resp.Info = verboseInfo(v.info)
	}
	return resp, nil
}

// verboseInfo is containerd's `crictl inspecti` shape (chainID and the
// image config), so tools that read it work against either runtime.
func verboseInfo(info *imageInfo) map[string]string {
	b, err := json.Marshal(struct {
		ChainID   string `json:"chainID"`
		ImageSpec any    `json:"imageSpec"`
	}{info.chainID, info.spec})
	if err != nil {
		return map[string]string{"info": err.Error()}
	}
	return map[string]string{"info": string(b)}
}

// ListImages lists every image, one entry per ID. A filter on image.image
// selects the image that name (tag, digest, ID or ID prefix) designates.
func (s *Service) ListImages(ctx context.Context, req *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	imgs, err := s.listCRI(s.ctx(ctx), req.GetFilter())
	if err != nil {
		return nil, grpcError(err)
	}
	return &runtime.ListImagesResponse{Images: imgs}, nil
}

// streamBatch bounds one StreamImages message well below gRPC's default
// 4 MiB limit (an Image with a few names is a few hundred bytes).
const streamBatch = 500

// StreamImages is ListImages in batches, for nodes whose image list would
// exceed the gRPC message size (kubelet's CRIListStreaming).
func (s *Service) StreamImages(req *runtime.StreamImagesRequest, stream grpc.ServerStreamingServer[runtime.StreamImagesResponse]) error {
	imgs, err := s.listCRI(s.ctx(stream.Context()), req.GetFilter())
	if err != nil {
		return grpcError(err)
	}
	for len(imgs) > 0 {
		n := min(len(imgs), streamBatch)
		if err := stream.Send(&runtime.StreamImagesResponse{Images: imgs[:n]}); err != nil {
			return err
		}
		imgs = imgs[n:]
	}
	return nil
}

func (s *Service) listCRI(ctx context.Context, filter *runtime.ImageFilter) ([]*runtime.Image, error) {
	if ref := filter.GetImage().GetImage(); ref != "" {
		v, err := s.lookup(ctx, ref)
		if errdefs.IsNotFound(err) {
			return []*runtime.Image{}, nil
		}
		if err != nil {
			return nil, err
		}
		return []*runtime.Image{s.toCRIImage(v)}, nil
	}
	views := s.store.list()
	out := make([]*runtime.Image, 0, len(views))
	for _, v := range views {
		out = append(out, s.toCRIImage(v))
	}
	return out, nil
}

// toCRIImage renders an index view as a CRI Image.
func (s *Service) toCRIImage(v view) *runtime.Image {
	tags, digests := splitNames(v.names())
	img := &runtime.Image{
		Id:          v.info.id,
		RepoTags:    tags,
		RepoDigests: digests,
		Size:        uint64(max(v.info.size, 0)),
		Pinned:      s.isPinned(v),
	}
	uid, name := userFromConfig(v.info.spec.Config.User)
	if uid != nil {
		img.Uid = &runtime.Int64Value{Value: *uid}
	}
	img.Username = name
	return img
}

// userFromConfig splits an image config's User ("1002", "www-data",
// "1003:1004", "www-data:1004") into the uid or the user name CRI reports;
// the group part is not part of Image. kubelet uses these to enforce
// runAsNonRoot, so a name is reported as a name (uid unknown until the
// container's /etc/passwd is read) and never guessed as 0.
func userFromConfig(user string) (uid *int64, username string) {
	user, _, _ = strings.Cut(user, ":")
	if user == "" {
		return nil, ""
	}
	if n, err := strconv.ParseInt(user, 10, 64); err == nil {
		return &n, ""
	}
	return nil, user
}

// DisplayNames gives the repo tag and repo digest that a container's status
// shows for the image it was created from. kubelet creates containers by
// image ID, and puts ContainerStatus.image into the pod's status, where
// users (kubectl get/describe) expect the image's name: like containerd's
// CRI, the first repo tag stands for the image and the first repo digest
// for its reference. Either is empty when the image has none (or is gone).
func (s *Service) DisplayNames(id string) (tag, digest string) {
	v, ok := s.store.get(id)
	if !ok {
		return "", ""
	}
	tags, digests := splitNames(v.names())
	if len(tags) > 0 {
		tag = tags[0]
	}
	if len(digests) > 0 {
		digest = digests[0]
	}
	return tag, digest
}
