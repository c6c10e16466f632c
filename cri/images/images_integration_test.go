package images

// Root integration tests against a private containerd (test/crienv) and the
// local registry that serves critest's images under their public names
// through a hosts.toml mirror. They skip unless root and the CRI tools of
// hack/install-cri-tools.sh are installed.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/test/crienv"
)

// Images of the local test registry (hack/testimages), under their public
// names; the hosts.toml mirror sends every registry to it.
const (
	imgTag      = "gcr.io/k8s-staging-cri-tools/test-image-tag:test"
	imgTagAll   = "gcr.io/k8s-staging-cri-tools/test-image-tag:all"
	imgUID      = "gcr.io/k8s-staging-cri-tools/test-image-user-uid:latest"
	imgUser     = "gcr.io/k8s-staging-cri-tools/test-image-user-username:latest"
	imgUIDGroup = "gcr.io/k8s-staging-cri-tools/test-image-user-uid-group:latest"
	imgUserGrp  = "gcr.io/k8s-staging-cri-tools/test-image-user-username-group:latest"
	imgPause    = "registry.k8s.io/pause:3.9"
	imgPauseOld = "k8s.gcr.io/pause:3.9"
	imgSandbox  = "registry.k8s.io/pause:3.10.2"
)

var imgTags = []string{
	"gcr.io/k8s-staging-cri-tools/test-image-tags:1",
	"gcr.io/k8s-staging-cri-tools/test-image-tags:2",
	"gcr.io/k8s-staging-cri-tools/test-image-tags:3",
}

type itest struct {
	t        *testing.T
	client   *containerd.Client
	hostsDir string
	svc      *Service
	ctx      context.Context
}

func setupIntegration(t *testing.T) *itest {
	cd := crienv.StartContainerd(t, crienv.ContainerdOptions{})
	_, hostsDir := crienv.EnsureRegistry(t)
	client := cd.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	svc, err := New(ctx, client, Options{RegistryConfigDir: hostsDir, PinnedImages: []string{imgSandbox}})
	if err != nil {
		t.Fatal(err)
	}
	return &itest{t: t, client: client, hostsDir: hostsDir, svc: svc, ctx: ctx}
}

func (it *itest) pull(ref string) string {
	it.t.Helper()
	resp, err := it.svc.PullImage(it.ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
	if err != nil {
		it.t.Fatalf("PullImage(%s): %v", ref, err)
	}
	return resp.ImageRef
}

func (it *itest) status(ref string) *runtime.Image {
	it.t.Helper()
	resp, err := it.svc.ImageStatus(it.ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: ref}})
	if err != nil {
		it.t.Fatalf("ImageStatus(%s): %v", ref, err)
	}
	return resp.GetImage()
}

func (it *itest) remove(ref string) {
	it.t.Helper()
	if _, err := it.svc.RemoveImage(it.ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: ref}}); err != nil {
		it.t.Fatalf("RemoveImage(%s): %v", ref, err)
	}
}

// containerdNames lists the containerd image names (namespace k8s.io).
func (it *itest) containerdNames() []string {
	it.t.Helper()
	recs, err := it.client.ImageService().List(namespaces.WithNamespace(it.ctx, "k8s.io"))
	if err != nil {
		it.t.Fatal(err)
	}
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	return names
}

func TestIntegration(t *testing.T) {
	it := setupIntegration(t)

	t.Run("PullStatusRemoveByTag", func(t *testing.T) {
		it.t = t
		id := it.pull(imgTag)
		if !isImageID(id) {
			t.Fatalf("image_ref %q is not an image ID", id)
		}
		st := it.status(imgTag)
		if st == nil || st.Id != id {
			t.Fatalf("status by tag = %v, want id %s", st, id)
		}
		if !slices.Equal(st.RepoTags, []string{imgTag}) || len(st.RepoDigests) != 1 ||
			!strings.HasPrefix(st.RepoDigests[0], "gcr.io/k8s-staging-cri-tools/test-image-tag@sha256:") || st.Size == 0 {
			t.Errorf("status = %v", st)
		}
		// Same answer by ID, by digest and by a short ID prefix.
		for _, ref := range []string{id, st.RepoDigests[0], id[7:19]} {
			if got := it.status(ref); got.String() != st.String() {
				t.Errorf("status(%s) = %v, want %v", ref, got, st)
			}
		}
		// Three containerd records, all managed.
		names := it.containerdNames()
		for _, n := range []string{id, imgTag, st.RepoDigests[0]} {
			if !slices.Contains(names, n) {
				t.Errorf("containerd has %v, missing %s", names, n)
			}
			rec, err := it.client.ImageService().Get(namespaces.WithNamespace(it.ctx, "k8s.io"), n)
			if err != nil || rec.Labels[LabelManaged] != LabelManagedValue {
				t.Errorf("record %s: %v labels %v", n, err, rec.Labels)
			}
		}
		// Unpacked into the snapshotter when PullImage returns.
		img, err := it.svc.Get(it.ctx, imgTag)
		if err != nil {
			t.Fatal(err)
		}
		if img.ID != id || img.Name != id || img.ChainID == "" || len(img.Config.Cmd) == 0 {
			t.Errorf("Get = %+v", img)
		}
		if ok, err := img.CDImage.IsUnpacked(namespaces.WithNamespace(it.ctx, "k8s.io"), "overlayfs"); err != nil || !ok {
			t.Errorf("IsUnpacked = %v, %v", ok, err)
		}

		it.remove(imgTag)
		for _, ref := range []string{imgTag, id, st.RepoDigests[0]} {
			if got := it.status(ref); got != nil {
				t.Errorf("status(%s) after remove = %v", ref, got)
			}
		}
		if names := it.containerdNames(); len(names) != 0 {
			t.Errorf("containerd still has %v", names)
		}
		if _, err := it.svc.Get(it.ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("Get after remove: %v", err)
		}
		it.remove(imgTag) // idempotent
	})

	t.Run("MultiTagListAndRemoveByOneTag", func(t *testing.T) {
		it.t = t
		var ids []string
		for _, ref := range imgTags {
			ids = append(ids, it.pull(ref))
		}
		if ids[0] != ids[1] || ids[1] != ids[2] {
			t.Fatalf("ids %v differ", ids)
		}
		id2 := it.pull(imgTagAll)
		list, err := it.svc.ListImages(it.ctx, &runtime.ListImagesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Images) != 2 {
			t.Fatalf("ListImages: %v", list.Images)
		}
		for _, img := range list.Images {
			switch img.Id {
			case ids[0]:
				if !slices.Equal(img.RepoTags, imgTags) {
					t.Errorf("tags = %v", img.RepoTags)
				}
			case id2:
				if !slices.Equal(img.RepoTags, []string{imgTagAll}) {
					t.Errorf("tags = %v", img.RepoTags)
				}
			default:
				t.Errorf("unexpected image %v", img)
			}
		}
		f, err := it.svc.ListImages(it.ctx, &runtime.ListImagesRequest{Filter: &runtime.ImageFilter{Image: &runtime.ImageSpec{Image: imgTags[1]}}})
		if err != nil || len(f.Images) != 1 || f.Images[0].Id != ids[0] {
			t.Errorf("filtered list = %v, %v", f.GetImages(), err)
		}

		it.remove(imgTags[0])
		for _, ref := range append(slices.Clone(imgTags), ids[0]) {
			if got := it.status(ref); got != nil {
				t.Errorf("status(%s) after removing one tag = %v", ref, got)
			}
		}
		if got := it.status(imgTagAll); got == nil {
			t.Error("unrelated image removed")
		}
		it.remove(id2)
	})

	t.Run("SameImageTwoRegistries", func(t *testing.T) {
		it.t = t
		a, b := it.pull(imgPause), it.pull(imgPauseOld)
		if a != b {
			t.Fatalf("ids %s and %s differ", a, b)
		}
		st := it.status(imgPauseOld)
		if !slices.Equal(st.RepoTags, []string{imgPauseOld, imgPause}) || len(st.RepoDigests) != 2 {
			t.Errorf("status = %v", st)
		}
		it.remove(a)
		if it.status(imgPause) != nil || it.status(imgPauseOld) != nil {
			t.Error("not removed under both names")
		}
	})

	t.Run("User", func(t *testing.T) {
		it.t = t
		for _, tc := range []struct {
			ref  string
			uid  int64
			name string
		}{{imgUID, 1002, ""}, {imgUser, 0, "www-data"}, {imgUIDGroup, 1003, ""}, {imgUserGrp, 0, "www-data"}} {
			it.pull(tc.ref)
			st := it.status(tc.ref)
			if st.GetUid().GetValue() != tc.uid || st.GetUsername() != tc.name || (tc.name != "" && st.Uid != nil) {
				t.Errorf("%s: uid %v username %q", tc.ref, st.GetUid(), st.GetUsername())
			}
			it.remove(tc.ref)
		}
	})

	t.Run("ConcurrentPullAndRemove", func(t *testing.T) {
		it.t = t
		var wg sync.WaitGroup
		ids := make([]string, 5)
		errs := make([]error, 5)
		for i := range 5 {
			wg.Go(func() {
				resp, err := it.svc.PullImage(it.ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: imgTag}})
				ids[i], errs[i] = resp.GetImageRef(), err
			})
		}
		wg.Wait()
		for i := range 5 {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("pull %d: %s, %v", i, ids[i], errs[i])
			}
		}
		id := ids[0]
		found := make([]bool, 5)
		for i := range 5 {
			wg.Go(func() {
				_, errs[i] = it.svc.RemoveImage(it.ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: id}})
				resp, err := it.svc.ImageStatus(it.ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: id}})
				found[i] = err != nil || resp.GetImage() != nil
			})
		}
		wg.Wait()
		for i := range 5 {
			if errs[i] != nil || found[i] {
				t.Errorf("remove %d: err %v, still found %v", i, errs[i], found[i])
			}
		}
	})

	t.Run("PullErrors", func(t *testing.T) {
		it.t = t
		ctx, cancel := context.WithTimeout(it.ctx, time.Millisecond)
		defer cancel()
		_, err := it.svc.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: imgTagAll}})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("1ms pull: %v, want DeadlineExceeded", err)
		}
		_, err = it.svc.PullImage(it.ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: "gcr.io/k8s-staging-cri-tools/does-not-exist:1"}})
		if err == nil {
			t.Error("pull of a missing image succeeded")
		}
		// The abandoned 1ms pull must not leave a half-named image.
		time.Sleep(500 * time.Millisecond)
		if st := it.status(imgTagAll); st != nil {
			if len(st.RepoTags) != 1 || len(st.RepoDigests) != 1 {
				t.Errorf("abandoned pull left %v", st)
			}
			it.remove(imgTagAll)
		}
	})

	t.Run("ImageFsInfo", func(t *testing.T) {
		it.t = t
		it.pull(imgTag)
		resp, err := it.svc.ImageFsInfo(it.ctx, &runtime.ImageFsInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.ImageFilesystems) != 1 {
			t.Fatalf("%v", resp)
		}
		fs := resp.ImageFilesystems[0]
		mp := fs.GetFsId().GetMountpoint()
		if filepath.Base(mp) != "io.containerd.snapshotter.v1.overlayfs" {
			t.Errorf("mountpoint %q", mp)
		}
		if _, err := os.Stat(mp); err != nil {
			t.Errorf("mountpoint: %v", err)
		}
		if fs.GetUsedBytes().GetValue() == 0 || fs.GetInodesUsed().GetValue() == 0 {
			t.Errorf("usage = %v", fs)
		}
		if d := time.Since(time.Unix(0, fs.Timestamp)); d < 0 || d > time.Minute {
			t.Errorf("timestamp %v ago", d)
		}
		before := fs.GetUsedBytes().GetValue()
		// Again, from the memo; then after removal the space is given back
		// at once (synchronous delete).
		resp, _ = it.svc.ImageFsInfo(it.ctx, &runtime.ImageFsInfoRequest{})
		if resp.ImageFilesystems[0].GetUsedBytes().GetValue() != before {
			t.Errorf("second call %v, first %d", resp.ImageFilesystems[0], before)
		}
		it.remove(imgTag)
		resp, _ = it.svc.ImageFsInfo(it.ctx, &runtime.ImageFsInfoRequest{})
		if after := resp.ImageFilesystems[0].GetUsedBytes().GetValue(); after >= before {
			t.Errorf("used bytes %d after remove, %d before", after, before)
		}
	})

	t.Run("RestartRebuildsIndex", func(t *testing.T) {
		it.t = t
		id := it.pull(imgTags[0])
		it.pull(imgTags[1])
		sb, err := it.svc.EnsurePulled(it.ctx, "registry.k8s.io/pause:3.10.2")
		if err != nil {
			t.Fatal(err)
		}
		if !sb.Pinned {
			t.Error("sandbox image not pinned")
		}
		before, _ := it.svc.ListImages(it.ctx, &runtime.ListImagesRequest{})

		fresh, err := New(it.ctx, it.client, Options{RegistryConfigDir: it.hostsDir, PinnedImages: []string{imgSandbox}})
		if err != nil {
			t.Fatal(err)
		}
		after, _ := fresh.ListImages(it.ctx, &runtime.ListImagesRequest{})
		if len(before.Images) != 2 || len(after.Images) != 2 {
			t.Fatalf("before %v after %v", before.Images, after.Images)
		}
		for i := range before.Images {
			if before.Images[i].String() != after.Images[i].String() {
				t.Errorf("image %d: before %v after %v", i, before.Images[i], after.Images[i])
			}
		}
		if img, err := fresh.Get(it.ctx, imgTags[1]); err != nil || img.ID != id {
			t.Errorf("Get after restart: %v %v", img.ID, err)
		}
		// EnsurePulled of a present image does not pull (no registry
		// round trip is observable here, but it must return the same ID).
		if img, err := fresh.EnsurePulled(it.ctx, imgSandbox); err != nil || img.ID != sb.ID || !img.Pinned {
			t.Errorf("EnsurePulled after restart: %+v %v", img, err)
		}
		it.svc = fresh
		it.remove(id)
		it.remove(sb.ID)
	})

	t.Run("ForeignImages", func(t *testing.T) {
		it.t = t
		// An image pulled by another client (no CRI names, no labels) is
		// found on an index miss and gets its ID record on Sync.
		ctx := namespaces.WithNamespace(it.ctx, "k8s.io")
		foreign, err := it.client.Pull(ctx, imgUID, containerd.WithResolver(it.svc.newResolver(ctx, nil)))
		if err != nil {
			t.Fatal(err)
		}
		st := it.status(imgUID)
		if st == nil || st.GetUid().GetValue() != 1002 {
			t.Fatalf("foreign image status = %v", st)
		}
		img, err := it.svc.Get(it.ctx, imgUID)
		if err != nil {
			t.Fatal(err)
		}
		if err := it.svc.EnsureUnpacked(it.ctx, img); err != nil {
			t.Fatal(err)
		}
		if ok, _ := foreign.IsUnpacked(ctx, "overlayfs"); !ok {
			t.Error("not unpacked by EnsureUnpacked")
		}
		if err := it.svc.Sync(it.ctx); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(it.containerdNames(), st.Id) {
			t.Errorf("Sync did not add the ID record: %v", it.containerdNames())
		}
		it.remove(imgUID)
		if names := it.containerdNames(); len(names) != 0 {
			t.Errorf("left %v", names)
		}
	})

	t.Run("GRPC", func(t *testing.T) {
		it.t = t
		sock := filepath.Join(t.TempDir(), "images.sock")
		lis, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		runtime.RegisterImageServiceServer(srv, it.svc)
		go srv.Serve(lis)
		defer srv.Stop()
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := runtime.NewImageServiceClient(conn)

		st, err := c.ImageStatus(it.ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "never/pulled:1"}})
		if err != nil || st.GetImage() != nil {
			t.Errorf("ImageStatus(missing) = %v, %v", st, err)
		}
		_, err = c.PullImage(it.ctx, &runtime.PullImageRequest{})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "image.image") {
			t.Errorf("PullImage(empty) = %v", err)
		}
		ctx, cancel := context.WithTimeout(it.ctx, time.Millisecond)
		defer cancel()
		if _, err := c.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: imgTagAll}}); status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("PullImage(1ms) = %v, want DeadlineExceeded", err)
		}
		pr, err := c.PullImage(it.ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: imgTagAll}})
		if err != nil {
			t.Fatal(err)
		}
		st, err = c.ImageStatus(it.ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: imgTagAll}, Verbose: true})
		if err != nil || st.GetImage().GetId() != pr.ImageRef || !strings.Contains(st.Info["info"], `"imageSpec"`) {
			t.Errorf("ImageStatus = %v, %v", st, err)
		}
		stream, err := c.StreamImages(it.ctx, &runtime.StreamImagesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var streamed []string
		for {
			resp, err := stream.Recv()
			if err != nil {
				break
			}
			for _, img := range resp.Images {
				streamed = append(streamed, img.Id)
			}
		}
		if !slices.Equal(streamed, []string{pr.ImageRef}) {
			t.Errorf("StreamImages = %v", streamed)
		}
		if _, err := c.ImageFsInfo(it.ctx, &runtime.ImageFsInfoRequest{}); err != nil {
			t.Error(err)
		}
		if _, err := c.RemoveImage(it.ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: imgTagAll}}); err != nil {
			t.Error(err)
		}
	})

	t.Run("Auth", func(t *testing.T) {
		it.t = t
		reg := newAuthRegistry(t)
		// No hosts.toml: the fake registry is reached directly (a loopback
		// host:port is plain HTTP for containerd's resolver).
		svc, err := New(it.ctx, it.client, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ref := reg.host + "/test/auth:1"
		b64 := base64.StdEncoding.EncodeToString([]byte("alice:secret"))
		for _, tc := range []struct {
			name string
			auth *runtime.AuthConfig
			ok   bool
		}{
			{"anonymous", nil, false},
			{"wrong password", &runtime.AuthConfig{Username: "alice", Password: "nope"}, false},
			{"username/password", &runtime.AuthConfig{Username: "alice", Password: "secret"}, true},
			{"auth", &runtime.AuthConfig{Auth: b64}, true},
			{"server address matches", &runtime.AuthConfig{Auth: b64, ServerAddress: "http://" + reg.host}, true},
			{"server address of another registry", &runtime.AuthConfig{Auth: b64, ServerAddress: "quay.io"}, false},
			{"registry token", &runtime.AuthConfig{RegistryToken: "tok3n"}, true},
			{"wrong registry token", &runtime.AuthConfig{RegistryToken: "other"}, false},
		} {
			resp, err := svc.PullImage(it.ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}, Auth: tc.auth})
			if tc.ok != (err == nil) {
				t.Errorf("%s: %v, %v", tc.name, resp, err)
				continue
			}
			if err != nil {
				continue
			}
			if st := statusOf(t, svc, ref); st.GetId() != resp.ImageRef || st.GetUid().GetValue() != 1234 {
				t.Errorf("%s: status %v", tc.name, st)
			}
			if _, err := svc.RemoveImage(it.ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: ref}}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func statusOf(t *testing.T, svc *Service, ref string) *runtime.Image {
	t.Helper()
	resp, err := svc.ImageStatus(context.Background(), &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetImage()
}

// authRegistry is a one-image registry that demands either HTTP basic
// auth (alice:secret) or the bearer token "tok3n" on every request.
type authRegistry struct {
	host       string
	blobs      map[string][]byte // digest -> content
	mediaTypes map[string]string
	manifest   string // digest
}

func newAuthRegistry(t *testing.T) *authRegistry {
	r := &authRegistry{blobs: map[string][]byte{}, mediaTypes: map[string]string{}}
	add := func(b []byte, mt string) string {
		d := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		r.blobs[d], r.mediaTypes[d] = b, mt
		return d
	}
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	tw.Write([]byte("hi"))
	tw.Close()
	var gzBuf bytes.Buffer
	gw := gzip.NewWriter(&gzBuf)
	gw.Write(tarBuf.Bytes())
	gw.Close()
	layer := add(gzBuf.Bytes(), "application/vnd.oci.image.layer.v1.tar+gzip")
	cfg, _ := json.Marshal(map[string]any{
		"architecture": goruntime.GOARCH, "os": "linux",
		"config": map[string]any{"User": "1234"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{fmt.Sprintf("sha256:%x", sha256.Sum256(tarBuf.Bytes()))}},
	})
	config := add(cfg, "application/vnd.oci.image.config.v1+json")
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": r.mediaTypes[config], "digest": config, "size": len(cfg)},
		"layers": []any{map[string]any{"mediaType": r.mediaTypes[layer], "digest": layer, "size": gzBuf.Len()}},
	})
	r.manifest = add(man, "application/vnd.oci.image.manifest.v1+json")

	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *authRegistry) serve(w http.ResponseWriter, req *http.Request) {
	user, pass, basic := req.BasicAuth()
	if !(basic && user == "alice" && pass == "secret") && req.Header.Get("Authorization") != "Bearer tok3n" {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	p := req.URL.Path
	var d string
	switch {
	case p == "/v2/" || p == "/v2":
		return
	case p == "/v2/test/auth/manifests/1" || p == "/v2/test/auth/manifests/"+r.manifest:
		d = r.manifest
	case strings.HasPrefix(p, "/v2/test/auth/blobs/"):
		d = strings.TrimPrefix(p, "/v2/test/auth/blobs/")
	}
	b, ok := r.blobs[d]
	if !ok {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Type", r.mediaTypes[d])
	w.Header().Set("Docker-Content-Digest", d)
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	if req.Method != http.MethodHead {
		w.Write(b)
	}
}
