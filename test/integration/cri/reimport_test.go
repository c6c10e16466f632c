package cri

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestReimportedTag: a tag re-imported behind berth-cri's back with other
// content — `ctr -n k8s.io images import`, which is what `kind load` runs
// in a node — is followed: ImageStatus reports the new ID, CreateContainer
// by the tag runs the new content, and a deleted tag disappears. Before
// berth-cri followed containerd's image events the tag kept its first ID
// until a restart, and CreateContainer failed with "content digest not
// found" once containerd's GC had collected the old image.
func TestReimportedTag(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	pod := podConfig("reimport")
	pod.LogDirectory = t.TempDir()
	podID := e.runPod(pod)

	const tag = "bti.local/reimport:latest"
	dir := t.TempDir()
	var ids []string
	for _, version := range []string{"one", "two"} {
		archive := filepath.Join(dir, version+".tar")
		ids = append(ids, e.writeDerivedImage(busybox, tag, version, archive))
	}
	if ids[0] == ids[1] {
		t.Fatalf("the two builds have one ID %s", ids[0])
	}

	run := func(name string) *runtime.ContainerStatus {
		t.Helper()
		id := e.createContainer(podID, pod, name, tag, "cat", "/bti-version")
		e.startContainer(id)
		st := e.waitExited(id, time.Minute)
		out, _ := os.ReadFile(filepath.Join(pod.LogDirectory, name+".log"))
		st.Message = string(out) // the log, for the caller
		return st
	}

	for i, version := range []string{"one", "two"} {
		e.ctrImport(filepath.Join(dir, version+".tar"))
		img := e.waitImageID(tag, ids[i], 30*time.Second)
		if !containsStr(img.RepoTags, tag) {
			t.Fatalf("import %s: ImageStatus(%s) tags %v", version, tag, img.RepoTags)
		}
		st := run("c-" + version)
		if st.ImageRef != ids[i] || st.ExitCode != 0 || !strings.Contains(st.Message, "version "+version) {
			t.Fatalf("import %s: container from %s: image %s exit %d log %q; want image %s printing %q\nberth-cri log:\n%s",
				version, tag, st.ImageRef, st.ExitCode, st.Message, ids[i], "version "+version, e.log())
		}
	}
	// kubelet creates containers by image ID; the status (and so the pod's
	// status) names the image by its tag, as containerd's CRI does.
	byID := e.createContainer(podID, pod, "c-by-id", ids[1], "true")
	e.startContainer(byID)
	if st := e.waitExited(byID, time.Minute); st.GetImage().GetImage() != tag || st.ImageRef != ids[1] {
		t.Errorf("container created by ID %s: status image %q, image_ref %q; want %q, %q",
			ids[1], st.GetImage().GetImage(), st.ImageRef, tag, ids[1])
	}
	// The first build lost its tag: it is listed by ID only, or not at all.
	list, err := e.img.ListImages(e.ctx(), &runtime.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range list.Images {
		if img.Id == ids[0] && containsStr(img.RepoTags, tag) {
			t.Fatalf("ListImages still gives the old image %s the tag %s", ids[0], tag)
		}
	}

	// A tag deleted with ctr goes from ImageStatus too.
	e.ctrRun("images", "rm", tag)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := e.img.ImageStatus(e.ctx(), &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: tag}})
		if err != nil {
			t.Fatalf("ImageStatus(%s): %v", tag, err)
		}
		if r.Image == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ImageStatus(%s) still reports %s after `ctr images rm`", tag, r.Image.Id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// waitImageID polls ImageStatus until ref is image id (the event that
// tells berth-cri travels separately from ctr's answer).
func (e *env) waitImageID(ref, id string, d time.Duration) *runtime.Image {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, err := e.img.ImageStatus(e.ctx(), &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: ref}})
		if err != nil {
			e.t.Fatalf("ImageStatus(%s): %v", ref, err)
		}
		if r.Image != nil && r.Image.Id == id {
			return r.Image
		}
		if time.Now().After(deadline) {
			got := "no image"
			if r.Image != nil {
				got = r.Image.Id
			}
			e.t.Fatalf("ImageStatus(%s) = %s, want %s\nberth-cri log:\n%s", ref, got, id, e.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctrRun runs this containerd's ctr in the k8s.io namespace.
func (e *env) ctrRun(args ...string) string {
	e.t.Helper()
	cmd := exec.Command(tools.Ctr, append([]string{"--address", e.ctd.Address(), "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ctrImport imports an archive the way `kind load` does in a node.
func (e *env) ctrImport(archive string) {
	e.t.Helper()
	e.ctrRun("images", "import", "--all-platforms", "--digests", "--no-unpack", archive)
}

// writeDerivedImage writes an OCI archive of base plus one layer holding
// /bti-version ("version <version>"), named name, and returns its image ID
// (config digest). The archive carries every blob, so once the name moves
// on nothing but berth-cri's own records keeps the old build alive.
func (e *env) writeDerivedImage(base, name, version, archive string) string {
	e.t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	cl := e.ctd.Client(e.t)
	img, err := cl.GetImage(ctx, base)
	if err != nil {
		e.t.Fatalf("base image %s: %v", base, err)
	}
	cs := cl.ContentStore()
	mf, err := images.Manifest(ctx, cs, img.Target(), platforms.Default())
	if err != nil {
		e.t.Fatalf("manifest of %s: %v", base, err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(readBlob(e.t, ctx, cs, mf.Config), &cfg); err != nil {
		e.t.Fatal(err)
	}

	// The new layer: an uncompressed tar, so its digest is its diff ID.
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	body := []byte("version " + version + "\n")
	_ = tw.WriteHeader(&tar.Header{Name: "bti-version", Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)})
	_, _ = tw.Write(body)
	_ = tw.Close()
	layerDesc := imagespec.Descriptor{MediaType: imagespec.MediaTypeImageLayer, Digest: digest.FromBytes(layer.Bytes()), Size: int64(layer.Len())}

	rootfs, _ := cfg["rootfs"].(map[string]any)
	diffIDs, _ := rootfs["diff_ids"].([]any)
	rootfs["diff_ids"] = append(diffIDs, layerDesc.Digest.String())
	cfgBytes, _ := json.Marshal(cfg)
	cfgDesc := imagespec.Descriptor{MediaType: imagespec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgBytes), Size: int64(len(cfgBytes))}

	blobs := map[digest.Digest][]byte{layerDesc.Digest: layer.Bytes(), cfgDesc.Digest: cfgBytes}
	var layers []imagespec.Descriptor
	for _, l := range mf.Layers {
		blobs[l.Digest] = readBlob(e.t, ctx, cs, l)
		layers = append(layers, imagespec.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size})
	}
	layers = append(layers, layerDesc)
	manifest := imagespec.Manifest{MediaType: imagespec.MediaTypeImageManifest, Config: cfgDesc, Layers: layers}
	manifest.SchemaVersion = 2
	mfBytes, _ := json.Marshal(manifest)
	mfDesc := imagespec.Descriptor{MediaType: imagespec.MediaTypeImageManifest, Digest: digest.FromBytes(mfBytes), Size: int64(len(mfBytes)),
		Annotations: map[string]string{images.AnnotationImageName: name, imagespec.AnnotationRefName: "latest"}}
	blobs[mfDesc.Digest] = mfBytes
	index := imagespec.Index{MediaType: imagespec.MediaTypeImageIndex, Manifests: []imagespec.Descriptor{mfDesc}}
	index.SchemaVersion = 2
	idxBytes, _ := json.Marshal(index)

	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	put := func(name string, b []byte) {
		_ = aw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
		_, _ = aw.Write(b)
	}
	put(imagespec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", idxBytes)
	for d, b := range blobs {
		put("blobs/"+d.Algorithm().String()+"/"+d.Encoded(), b)
	}
	if err := aw.Close(); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(archive, out.Bytes(), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return cfgDesc.Digest.String()
}

func readBlob(t *testing.T, ctx context.Context, cs content.Store, d imagespec.Descriptor) []byte {
	t.Helper()
	b, err := content.ReadBlob(ctx, cs, d)
	if err != nil {
		t.Fatalf("read blob %s: %v", d.Digest, err)
	}
	return b
}
