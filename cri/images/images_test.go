package images

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestUserFromConfig(t *testing.T) {
	for _, tc := range []struct {
		user     string
		uid      *int64
		username string
	}{
		{"", nil, ""},
		{"1002", ptr(1002), ""},
		{"0", ptr(0), ""},
		{"www-data", nil, "www-data"},
		{"1003:1004", ptr(1003), ""},
		{"www-data:1004", nil, "www-data"},
		{"www-data:grp", nil, "www-data"},
		{":1004", nil, ""},
		{"99999999999999999999", nil, "99999999999999999999"}, // not an int64: a name
	} {
		uid, name := userFromConfig(tc.user)
		if !reflect.DeepEqual(uid, tc.uid) || name != tc.username {
			t.Errorf("userFromConfig(%q) = %v, %q; want %v, %q", tc.user, deref(uid), name, deref(tc.uid), tc.username)
		}
	}
}

func TestNormalizeAndRepoNames(t *testing.T) {
	const m = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const d = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	for _, tc := range []struct {
		in, norm, tag, dig string
		bad                bool
	}{
		{in: "busybox", norm: "docker.io/library/busybox:latest", tag: "docker.io/library/busybox:latest", dig: "docker.io/library/busybox@" + m},
		{in: "registry.k8s.io/e2e-test-images/busybox:1.29-2", norm: "registry.k8s.io/e2e-test-images/busybox:1.29-2",
			tag: "registry.k8s.io/e2e-test-images/busybox:1.29-2", dig: "registry.k8s.io/e2e-test-images/busybox@" + m},
		{in: "gcr.io/x/y@" + d, norm: "gcr.io/x/y@" + d, tag: "", dig: "gcr.io/x/y@" + d},
		// tag+digest: the digest is what is pulled, the tag is dropped.
		{in: "gcr.io/x/y:1@" + d, norm: "gcr.io/x/y@" + d, tag: "", dig: "gcr.io/x/y@" + d},
		{in: "localhost:5000/a/b", norm: "localhost:5000/a/b:latest", tag: "localhost:5000/a/b:latest", dig: "localhost:5000/a/b@" + m},
		{in: "library/UPPER", bad: true},
		{in: "", bad: true},
		{in: "a b", bad: true},
		{in: strings.Repeat("a", 64), bad: true}, // looks like an ID
	} {
		named, err := normalizeRef(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("normalizeRef(%q) = %v, want error", tc.in, named)
			}
			continue
		}
		if err != nil {
			t.Errorf("normalizeRef(%q): %v", tc.in, err)
			continue
		}
		if named.String() != tc.norm {
			t.Errorf("normalizeRef(%q) = %q, want %q", tc.in, named, tc.norm)
		}
		tag, dig := repoNames(named, digest.Digest(m))
		if tag != tc.tag || dig != tc.dig {
			t.Errorf("repoNames(%q) = %q, %q; want %q, %q", tc.in, tag, dig, tc.tag, tc.dig)
		}
	}
}

func TestSplitNames(t *testing.T) {
	id := "sha256:" + strings.Repeat("a", 64)
	dg := "sha256:" + strings.Repeat("b", 64)
	tags, digests := splitNames([]string{
		"gcr.io/t/tags:3", id, "gcr.io/t/tags@" + dg, "gcr.io/t/tags:1",
		"not a reference", "gcr.io/t/tags:2", "docker.io/library/busybox:latest",
	})
	wantTags := []string{"docker.io/library/busybox:latest", "gcr.io/t/tags:1", "gcr.io/t/tags:2", "gcr.io/t/tags:3"}
	if !reflect.DeepEqual(tags, wantTags) {
		t.Errorf("tags = %v, want %v", tags, wantTags)
	}
	if want := []string{"gcr.io/t/tags@" + dg}; !reflect.DeepEqual(digests, want) {
		t.Errorf("digests = %v, want %v", digests, want)
	}
}

func TestIsImageID(t *testing.T) {
	for in, want := range map[string]bool{
		"sha256:" + strings.Repeat("a", 64): true,
		"sha256:" + strings.Repeat("a", 63): false,
		"sha256:" + strings.Repeat("A", 64): false,
		strings.Repeat("a", 64):             false,
		"busybox":                           false,
	} {
		if got := isImageID(in); got != want {
			t.Errorf("isImageID(%q) = %v", in, got)
		}
	}
}

// fixture is a store with three images:
//
//	A: gcr.io/t/tags:1, :2, :3 (+ digest and ID names)
//	B: docker.io/library/busybox:latest (ID starting "ab…", like A's "aa…")
//	C: only an ID record.
func fixture() (*store, map[string]*imageInfo) {
	mk := func(hex string) *imageInfo {
		return &imageInfo{id: "sha256:" + hex, size: 100, chainID: "sha256:chain-" + hex[:4]}
	}
	infos := map[string]*imageInfo{
		"A": mk("aa" + strings.Repeat("1", 62)),
		"B": mk("ab" + strings.Repeat("2", 62)),
		"C": mk("cc" + strings.Repeat("3", 62)),
	}
	st := newStore()
	put := func(name string, info *imageInfo) {
		st.put(ctrimages.Image{Name: name, Target: imagespec.Descriptor{Digest: digest.Digest("sha256:m" + info.id[7:])}}, info)
	}
	for _, n := range []string{"gcr.io/t/tags:1", "gcr.io/t/tags:2", "gcr.io/t/tags:3",
		"gcr.io/t/tags@sha256:" + strings.Repeat("d", 64), infos["A"].id} {
		put(n, infos["A"])
	}
	put("docker.io/library/busybox:latest", infos["B"])
	put(infos["B"].id, infos["B"])
	put(infos["C"].id, infos["C"])
	return st, infos
}

func TestStoreGroupsByID(t *testing.T) {
	st, infos := fixture()
	views := st.list()
	if len(views) != 3 {
		t.Fatalf("list: %d groups, want 3", len(views))
	}
	for i := 1; i < len(views); i++ {
		if views[i-1].info.id >= views[i].info.id {
			t.Errorf("list not sorted by ID: %s before %s", views[i-1].info.id, views[i].info.id)
		}
	}
	a, ok := st.get(infos["A"].id)
	if !ok {
		t.Fatal("A missing")
	}
	tags, digests := splitNames(a.names())
	if len(tags) != 3 || len(digests) != 1 {
		t.Errorf("A: tags %v digests %v", tags, digests)
	}

	// A tag re-pulled to another image moves between groups.
	st.put(ctrimages.Image{Name: "gcr.io/t/tags:3"}, infos["B"])
	a, _ = st.get(infos["A"].id)
	b, _ := st.get(infos["B"].id)
	if len(a.records) != 4 || len(b.records) != 3 {
		t.Errorf("after move: A has %v, B has %v", a.names(), b.names())
	}

	// Dropping every name of a group removes the group.
	for _, n := range a.names() {
		st.drop(n)
	}
	if _, ok := st.get(infos["A"].id); ok {
		t.Error("A still present after dropping all its names")
	}
	if _, ok := st.lookupName("gcr.io/t/tags:1"); ok {
		t.Error("name index still has a dropped name")
	}
	st.drop("never-there") // no-op
	if n := len(st.list()); n != 2 {
		t.Errorf("%d groups left, want 2", n)
	}
}

func TestResolve(t *testing.T) {
	st, infos := fixture()
	a, b, c := infos["A"].id, infos["B"].id, infos["C"].id
	for _, tc := range []struct {
		ref, want string
		kind      func(error) bool // nil: success
	}{
		{ref: "gcr.io/t/tags:2", want: a},
		{ref: "gcr.io/t/tags@sha256:" + strings.Repeat("d", 64), want: a},
		{ref: "busybox", want: b},
		{ref: "docker.io/library/busybox", want: b},
		{ref: "docker.io/library/busybox:latest", want: b},
		{ref: a, want: a},
		{ref: c, want: c},
		{ref: "cc3", want: c},
		{ref: "sha256:cc33", want: c},
		{ref: a[7:], want: a},                       // full hex without the algorithm
		{ref: "a", kind: errdefs.IsInvalidArgument}, // aa… and ab…
		{ref: "sha256:" + strings.Repeat("e", 64), kind: errdefs.IsNotFound},
		{ref: "gcr.io/t/tags:4", kind: errdefs.IsNotFound},
		{ref: "ff", kind: errdefs.IsNotFound},
		{ref: "", kind: errdefs.IsInvalidArgument},
		{ref: "Not/Valid", kind: errdefs.IsNotFound},
	} {
		got, err := st.resolve(tc.ref)
		switch {
		case tc.kind == nil && err != nil:
			t.Errorf("resolve(%q): %v", tc.ref, err)
		case tc.kind == nil && got != tc.want:
			t.Errorf("resolve(%q) = %s, want %s", tc.ref, got, tc.want)
		case tc.kind != nil && (err == nil || !tc.kind(err)):
			t.Errorf("resolve(%q) = %q, %v; want error of another kind", tc.ref, got, err)
		}
	}
}

// A repository literally named like a hex prefix wins over the prefix.
func TestResolveNameBeforePrefix(t *testing.T) {
	st, infos := fixture()
	st.put(ctrimages.Image{Name: "docker.io/library/cc3:latest"}, infos["B"])
	if got, err := st.resolve("cc3"); err != nil || got != infos["B"].id {
		t.Errorf("resolve(cc3) = %s, %v; want B", got, err)
	}
}

func TestParseAuth(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name       string
		auth       *runtime.AuthConfig
		host       string
		user, pass string
		wantErr    bool
	}{
		{name: "nil", auth: nil, host: "r.io"},
		{name: "empty", auth: &runtime.AuthConfig{}, host: "r.io"},
		{name: "user/pass", auth: &runtime.AuthConfig{Username: "u", Password: "p"}, host: "r.io", user: "u", pass: "p"},
		{name: "username wins over auth", auth: &runtime.AuthConfig{Username: "u", Password: "p", Auth: b64("x:y")}, host: "r.io", user: "u", pass: "p"},
		{name: "identity token", auth: &runtime.AuthConfig{IdentityToken: "tok"}, host: "r.io", user: "", pass: "tok"},
		{name: "auth base64", auth: &runtime.AuthConfig{Auth: b64("alice:s3:cr3t")}, host: "r.io", user: "alice", pass: "s3:cr3t"},
		{name: "auth unpadded", auth: &runtime.AuthConfig{Auth: strings.TrimRight(b64("bob:pw"), "=")}, host: "r.io", user: "bob", pass: "pw"},
		{name: "auth trailing NUL", auth: &runtime.AuthConfig{Auth: b64("bob:pw\x00\x00")}, host: "r.io", user: "bob", pass: "pw"},
		{name: "auth not base64", auth: &runtime.AuthConfig{Auth: "!!!"}, host: "r.io", wantErr: true},
		{name: "auth without colon", auth: &runtime.AuthConfig{Auth: b64("nocolon")}, host: "r.io", wantErr: true},
		{name: "registry token only", auth: &runtime.AuthConfig{RegistryToken: "rt"}, host: "r.io"},
		{name: "server match", auth: &runtime.AuthConfig{Username: "u", Password: "p", ServerAddress: "https://r.io"}, host: "r.io", user: "u", pass: "p"},
		{name: "server without scheme", auth: &runtime.AuthConfig{Username: "u", Password: "p", ServerAddress: "r.io:5000"}, host: "r.io:5000", user: "u", pass: "p"},
		{name: "server mismatch (mirror)", auth: &runtime.AuthConfig{Username: "u", Password: "p", ServerAddress: "https://r.io"}, host: "127.0.0.1:5000"},
		{name: "docker hub alias", auth: &runtime.AuthConfig{Username: "u", Password: "p", ServerAddress: "https://index.docker.io/v1/"}, host: "registry-1.docker.io", user: "u", pass: "p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, pass, err := parseAuth(tc.auth, tc.host)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want error, got %q %q", user, pass)
				}
				return
			}
			if err != nil || user != tc.user || pass != tc.pass {
				t.Fatalf("parseAuth = %q, %q, %v; want %q, %q", user, pass, err, tc.user, tc.pass)
			}
		})
	}
}

func TestRegistryTokenOnlyToItsHost(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)

	inner := func(host string) ([]docker.RegistryHost, error) {
		return []docker.RegistryHost{{Host: u.Host, Scheme: "http", Path: "/v2", Client: &http.Client{}}}, nil
	}
	get := func(hosts docker.RegistryHosts, path string, hdr string) {
		t.Helper()
		rhs, err := hosts("registry.example")
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if hdr != "" {
			req.Header.Set("Authorization", hdr)
		}
		resp, err := rhs[0].Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if hdr == "" && req.Header.Get("Authorization") != "" {
			t.Error("the caller's request was modified")
		}
	}
	get(withRegistryToken(inner, "", "T"), "/any", "")
	get(withRegistryToken(inner, u.Host, "T"), "/match", "")
	get(withRegistryToken(inner, "other.io", "T"), "/other", "")
	get(withRegistryToken(inner, "", "T"), "/preset", "Bearer fromauthorizer")
	want := map[string]string{"/any": "Bearer T", "/match": "Bearer T", "/other": "", "/preset": "Bearer fromauthorizer"}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("Authorization headers seen = %v, want %v", seen, want)
	}
}

func TestAuthKey(t *testing.T) {
	a := authKey(&runtime.AuthConfig{Username: "ab", Password: "c"})
	b := authKey(&runtime.AuthConfig{Username: "a", Password: "bc"})
	if a == b {
		t.Error("field boundaries are not part of the key")
	}
	if authKey(nil) != "" || authKey(&runtime.AuthConfig{Username: "u"}) == "" {
		t.Error("nil auth must give the empty key, non-nil a digest")
	}
	if strings.Contains(authKey(&runtime.AuthConfig{Password: "secret"}), "secret") {
		t.Error("key contains the secret")
	}
}

func TestFlightGroupCollapses(t *testing.T) {
	var g flightGroup[int]
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) (int, error) {
		calls.Add(1)
		<-release
		return 42, nil
	}
	var wg sync.WaitGroup
	results := make(chan int, 10)
	for range 10 {
		wg.Go(func() {
			v, err := g.do(context.Background(), "k", fn)
			if err != nil {
				t.Error(err)
			}
			results <- v
		})
	}
	waitFor(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.calls["k"] != nil && g.calls["k"].waiters == 10
	})
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != 42 {
			t.Errorf("result %d", v)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("fn ran %d times, want 1", n)
	}
	// Finished keys are released: the next call runs fn again.
	release = make(chan struct{})
	close(release)
	if _, err := g.do(context.Background(), "k", fn); err != nil || calls.Load() != 2 {
		t.Errorf("second round: err %v, calls %d", err, calls.Load())
	}
}

func TestFlightGroupCancellation(t *testing.T) {
	var g flightGroup[string]
	started := make(chan struct{})
	workCtx := make(chan context.Context, 1)
	release := make(chan struct{})
	fn := func(ctx context.Context) (string, error) {
		workCtx <- ctx
		close(started)
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	// Caller 1 gives up; caller 2 keeps waiting; the work goes on.
	ctx1, cancel1 := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := g.do(ctx1, "k", fn); errc <- err }()
	<-started
	wctx := <-workCtx
	res := make(chan string, 1)
	go func() { v, _ := g.do(context.Background(), "k", fn); res <- v }()
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.calls["k"].waiters == 2 })
	cancel1()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("caller 1: %v, want Canceled", err)
	}
	if wctx.Err() != nil {
		t.Fatal("work cancelled while another caller waits")
	}
	close(release)
	if v := <-res; v != "done" {
		t.Fatalf("caller 2 got %q", v)
	}

	// The only caller gives up (deadline): the work is cancelled and the
	// key released at once.
	started = make(chan struct{})
	ctx3, cancel3 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel3()
	block := make(chan struct{})
	_, err := g.do(ctx3, "k2", func(ctx context.Context) (string, error) {
		<-ctx.Done()
		close(block)
		return "", ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	select {
	case <-block:
	case <-time.After(5 * time.Second):
		t.Fatal("abandoned work was not cancelled")
	}
	g.mu.Lock()
	_, still := g.calls["k2"]
	g.mu.Unlock()
	if still {
		t.Error("abandoned key not released")
	}
	// A caller whose context is already done does not start work.
	ctx4, cancel4 := context.WithCancel(context.Background())
	cancel4()
	if _, err := g.do(ctx4, "k3", func(context.Context) (string, error) { t.Error("ran"); return "", nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestGRPCError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", errdefs.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("x: %w", context.Canceled), codes.Canceled},
		{fmt.Errorf("x: %w", errdefs.ErrUnauthenticated), codes.Unauthenticated},
		{fmt.Errorf("x: %w", errdefs.ErrUnavailable), codes.Unavailable},
		{status.Error(codes.ResourceExhausted, "kept"), codes.ResourceExhausted},
		{errors.New("plain"), codes.Unknown},
	} {
		if got := status.Code(grpcError(tc.err)); got != tc.code {
			t.Errorf("grpcError(%v) code %v, want %v", tc.err, got, tc.code)
		}
	}
	if grpcError(nil) != nil {
		t.Error("grpcError(nil) != nil")
	}
}

// fakeImages is a containerd image store that has nothing, so lookups that
// miss the index find nothing in "containerd" either.
type fakeImages struct{ ctrimages.Store }

func (fakeImages) Get(context.Context, string) (ctrimages.Image, error) {
	return ctrimages.Image{}, errdefs.ErrNotFound
}

func (fakeImages) Delete(context.Context, string, ...ctrimages.DeleteOpt) error {
	return errdefs.ErrNotFound
}

func testService(t *testing.T) (*Service, map[string]*imageInfo) {
	st, infos := fixture()
	infos["B"].spec.Config.User = "www-data:1004"
	infos["C"].spec.Config.User = "1002"
	return &Service{
		opts:   Options{Namespace: "k8s.io", Snapshotter: "overlayfs"},
		log:    slog.New(slog.DiscardHandler),
		images: fakeImages{},
		store:  st,
		pinned: map[string]bool{"docker.io/library/busybox:latest": true},
	}, infos
}

// Requests with missing or malformed fields get InvalidArgument naming the
// field, and never a panic on nil nested messages.
func TestValidation(t *testing.T) {
	s, _ := testService(t)
	ctx := context.Background()
	check := func(name string, err error, want string) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), want) {
			t.Errorf("%s: %v; want InvalidArgument mentioning %q", name, err, want)
		}
	}
	_, err := s.PullImage(ctx, nil)
	check("PullImage(nil)", err, "image.image is required")
	_, err = s.PullImage(ctx, &runtime.PullImageRequest{})
	check("PullImage(no image)", err, "image.image is required")
	_, err = s.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: "Bad Ref"}})
	check("PullImage(bad ref)", err, "image.image")
	_, err = s.ImageStatus(ctx, &runtime.ImageStatusRequest{})
	check("ImageStatus(no image)", err, "image.image is required")
	_, err = s.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{}})
	check("RemoveImage(empty)", err, "image.image is required")
	if _, err := s.ListImages(ctx, nil); err != nil {
		t.Errorf("ListImages(nil): %v", err)
	}
	if _, err := s.ListImages(ctx, &runtime.ListImagesRequest{Filter: &runtime.ImageFilter{}}); err != nil {
		t.Errorf("ListImages(empty filter): %v", err)
	}
}

func TestStatusAndList(t *testing.T) {
	s, infos := testService(t)
	ctx := context.Background()

	resp, err := s.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "gcr.io/t/tags:2"}})
	if err != nil || resp.GetImage() == nil {
		t.Fatalf("ImageStatus: %v %v", resp, err)
	}
	img := resp.GetImage()
	if img.Id != infos["A"].id || len(img.RepoTags) != 3 || len(img.RepoDigests) != 1 || img.Size != 100 || img.Pinned || img.Uid != nil {
		t.Errorf("A = %v", img)
	}
	if resp.Info != nil {
		t.Error("info without verbose")
	}
	// Every name of the image gives the same answer.
	for _, ref := range append(append([]string{img.Id}, img.RepoTags...), img.RepoDigests...) {
		r, err := s.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: ref}})
		if err != nil || !reflect.DeepEqual(r.GetImage().String(), img.String()) {
			t.Errorf("ImageStatus(%q) = %v, %v", ref, r.GetImage(), err)
		}
	}

	resp, _ = s.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "busybox"}, Verbose: true})
	if b := resp.GetImage(); b.GetUsername() != "www-data" || b.GetUid() != nil || !b.Pinned {
		t.Errorf("B = %v", b)
	}
	if !strings.Contains(resp.Info["info"], `"imageSpec"`) || !strings.Contains(resp.Info["info"], `"chainID":"sha256:chain-ab22"`) {
		t.Errorf("verbose info = %v", resp.Info)
	}
	resp, _ = s.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "cc"}})
	if c := resp.GetImage(); c.GetUid().GetValue() != 1002 || c.Username != "" || len(c.RepoTags) != 0 || len(c.RepoDigests) != 0 {
		t.Errorf("C = %v", c)
	}

	// Missing: OK with a nil image (the index misses, "containerd" too).
	resp, err = s.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "missing:1"}})
	if err != nil || resp.GetImage() != nil {
		t.Errorf("missing: %v, %v", resp, err)
	}

	list, err := s.ListImages(ctx, &runtime.ListImagesRequest{})
	if err != nil || len(list.Images) != 3 {
		t.Fatalf("ListImages: %d images, %v", len(list.GetImages()), err)
	}
	for _, f := range []struct {
		ref  string
		want []string
	}{
		{"gcr.io/t/tags:1", []string{infos["A"].id}},
		{infos["C"].id, []string{infos["C"].id}},
		{"busybox:latest", []string{infos["B"].id}},
		{"nothing:here", nil},
	} {
		l, err := s.ListImages(ctx, &runtime.ListImagesRequest{Filter: &runtime.ImageFilter{Image: &runtime.ImageSpec{Image: f.ref}}})
		var got []string
		for _, i := range l.GetImages() {
			got = append(got, i.Id)
		}
		if err != nil || !reflect.DeepEqual(got, f.want) {
			t.Errorf("ListImages(filter %q) = %v, %v; want %v", f.ref, got, err, f.want)
		}
	}
}

func TestRemoveMissingIsOK(t *testing.T) {
	s, _ := testService(t)
	for _, ref := range []string{"missing:1", "sha256:" + strings.Repeat("e", 64), "Not Valid"} {
		if _, err := s.RemoveImage(context.Background(), &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: ref}}); err != nil {
			t.Errorf("RemoveImage(%q): %v", ref, err)
		}
	}
}

func ptr(v int64) *int64 { return &v }

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDisplayNames: what a container's status shows for each image of the
// fixture (first tag and first digest reference, as containerd's CRI).
func TestDisplayNames(t *testing.T) {
	s, infos := testService(t)
	for _, tc := range []struct {
		name, id, tag, digest string
	}{
		{"tags and a digest", infos["A"].id, "gcr.io/t/tags:1", "gcr.io/t/tags@sha256:" + strings.Repeat("d", 64)},
		{"one tag", infos["B"].id, "docker.io/library/busybox:latest", ""},
		{"ID record only", infos["C"].id, "", ""},
		{"unknown image", "sha256:" + strings.Repeat("e", 64), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag, digest := s.DisplayNames(tc.id)
			if tag != tc.tag || digest != tc.digest {
				t.Errorf("DisplayNames = %q, %q; want %q, %q", tag, digest, tc.tag, tc.digest)
			}
		})
	}
}
