package images

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/test/crienv"
)

// versionOnlyRuntime is the least RuntimeService critest's framework needs
// to start (it asks for the version); image specs use only the ImageService.
type versionOnlyRuntime struct {
	runtime.UnimplementedRuntimeServiceServer
}

func (versionOnlyRuntime) Version(context.Context, *runtime.VersionRequest) (*runtime.VersionResponse, error) {
	return &runtime.VersionResponse{Version: "0.1.0", RuntimeName: "berth-images-test", RuntimeVersion: "0", RuntimeApiVersion: "v1"}, nil
}

// TestCritestImageSpecs runs critest v1.36.0's image specs ("Image Manager"
// and "Image Consistency") against this package alone, so an image service
// regression shows up here rather than in a full critest run. The spec
// pulling by digest is skipped: its digest names upstream bytes that the
// offline registry cannot reproduce (docs/design/cri-plan.md §5.1).
func TestCritestImageSpecs(t *testing.T) {
	tools := crienv.Require(t)
	cd := crienv.StartContainerd(t, crienv.ContainerdOptions{})
	_, hostsDir := crienv.EnsureRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	svc, err := New(ctx, cd.Client(t), Options{RegistryConfigDir: hostsDir})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "cri.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtime.RegisterImageServiceServer(srv, svc)
	runtime.RegisterRuntimeServiceServer(srv, versionOnlyRuntime{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, tools.Critest, "--runtime-endpoint", "unix://"+sock,
		"--ginkgo.focus", `Image Manager|Image Consistency`, "--ginkgo.skip", "digest", "--ginkgo.no-color")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("critest: %v\n%s", err, out.String())
	}
	t.Logf("critest image specs passed:\n%s", lastLines(out.String(), 4))
}

func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimRight([]byte(s), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
