package tenant

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	mapping := filepath.Join(dir, "map.json")
	if err := os.WriteFile(mapping, []byte(`{"team-a-dev":"team-a","team-a-prod":"team-a"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		s       Sources
		want    string
		wantErr string
	}{
		{"runtimeConfig wins", Sources{RuntimeConfig: "rc", Args: "args", Namespace: "ns"}, "rc", ""},
		{"args next", Sources{Args: "args", Annotations: map[string]string{AnnotationKey: "ann"}}, "args", ""},
		{"annotation next", Sources{Annotations: map[string]string{AnnotationKey: "ann"}, Namespace: "ns"}, "ann", ""},
		{"mapping file", Sources{Namespace: "team-a-dev", MappingFile: mapping}, "team-a", ""},
		{"namespace fallback", Sources{Namespace: "other", MappingFile: mapping}, "other", ""},
		{"missing mapping file is empty", Sources{Namespace: "ns", MappingFile: filepath.Join(dir, "nope")}, "ns", ""},
		{"nothing at all", Sources{}, Default, ""},
		{"invalid runtime tenant", Sources{RuntimeConfig: "../etc"}, "", "runtimeConfig.tenant"},
		{"invalid annotation", Sources{Annotations: map[string]string{AnnotationKey: "Upper"}}, "", "annotation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.s)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestResolveNamespaceDecides covers tenancy.registryMode "cluster": the
// namespace's tenant is the answer, pod-supplied sources (label or
// annotation via runtimeConfig, CNI args, the annotation) may repeat it,
// and one naming another tenant is refused with both named. A namespace
// not mapped yet waits even when the pod names a tenant.
func TestResolveNamespaceDecides(t *testing.T) {
	dir := t.TempDir()
	mapping := filepath.Join(dir, "map.json")
	if err := os.WriteFile(mapping, []byte(`{"tnh-a":"alpha","tnh-b":"beta","kube-system":"default"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ann := func(v string) map[string]string { return map[string]string{AnnotationKey: v} }
	base := Sources{MappingFile: mapping, RequireMapping: true, NamespaceDecides: true}
	with := func(f func(*Sources)) Sources { s := base; f(&s); return s }
	tests := []struct {
		name     string
		s        Sources
		want     string
		mismatch *MismatchError // want this refusal
		notYet   bool
		wantErr  string // another error mentioning this
	}{
		{name: "namespace alone", s: with(func(s *Sources) { s.Namespace = "tnh-b" }), want: "beta"},
		{name: "unlabelled namespace is default", s: with(func(s *Sources) { s.Namespace = "kube-system" }), want: Default},
		{name: "matching annotation accepted", s: with(func(s *Sources) { s.Namespace = "tnh-b"; s.Annotations = ann("beta") }), want: "beta"},
		{name: "matching runtimeConfig accepted", s: with(func(s *Sources) { s.Namespace = "tnh-b"; s.RuntimeConfig = "beta"; s.Annotations = ann("beta") }), want: "beta"},
		{name: "annotation naming another tenant refused", s: with(func(s *Sources) { s.Namespace = "tnh-b"; s.Annotations = ann("alpha") }),
			mismatch: &MismatchError{From: "annotation " + AnnotationKey, Asked: "alpha", Namespace: "tnh-b", NamespaceTenant: "beta"}},
		{name: "runtimeConfig (pod label) naming another tenant refused", s: with(func(s *Sources) { s.Namespace = "tnh-b"; s.RuntimeConfig = "alpha" }),
			mismatch: &MismatchError{From: "runtimeConfig.tenant", Asked: "alpha", Namespace: "tnh-b", NamespaceTenant: "beta"}},
		{name: "a matching source does not hide a mismatching one", s: with(func(s *Sources) { s.Namespace = "tnh-b"; s.RuntimeConfig = "beta"; s.Annotations = ann("alpha") }),
			mismatch: &MismatchError{From: "annotation " + AnnotationKey, Asked: "alpha", Namespace: "tnh-b", NamespaceTenant: "beta"}},
		{name: "CNI_ARGS naming another tenant refused", s: with(func(s *Sources) { s.Namespace = "tnh-a"; s.Args = "beta" }),
			mismatch: &MismatchError{From: "CNI_ARGS BERTH_TENANT", Asked: "beta", Namespace: "tnh-a", NamespaceTenant: "alpha"}},
		{name: "default-tenant namespace cannot join a tenant", s: with(func(s *Sources) { s.Namespace = "kube-system"; s.Annotations = ann("alpha") }),
			mismatch: &MismatchError{From: "annotation " + AnnotationKey, Asked: "alpha", Namespace: "kube-system", NamespaceTenant: Default}},
		{name: "unmapped namespace waits, annotation or not", s: with(func(s *Sources) { s.Namespace = "tnh-new"; s.Annotations = ann("alpha") }), notYet: true},
		{name: "invalid annotation is still a config error", s: with(func(s *Sources) { s.Namespace = "tnh-b"; s.Annotations = ann("Nope") }), wantErr: "not a valid tenant name"},
		{name: "no namespace: the pod's own choice (not Kubernetes)", s: with(func(s *Sources) { s.RuntimeConfig = "alpha" }), want: "alpha"},
		{name: "no namespace, nothing named", s: base, want: Default},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.s)
			var mm *MismatchError
			var ny *NotYetError
			switch {
			case tc.mismatch != nil:
				if !errors.As(err, &mm) || *mm != *tc.mismatch {
					t.Fatalf("Resolve = %q, %v; want %+v", got, err, *tc.mismatch)
				}
				// The message names both tenants and the namespace.
				for _, w := range []string{`"` + tc.mismatch.Asked + `"`, `"` + tc.mismatch.NamespaceTenant + `"`, `"` + tc.mismatch.Namespace + `"`} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("message %q does not name %s", err, w)
					}
				}
			case tc.notYet:
				if !errors.As(err, &ny) {
					t.Fatalf("Resolve = %q, %v; want a NotYetError", got, err)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.As(err, &mm) {
					t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
				}
			default:
				if err != nil || got != tc.want {
					t.Fatalf("Resolve = %q, %v; want %q", got, err, tc.want)
				}
			}
		})
	}
}

func TestRegistryStableAndConcurrent(t *testing.T) {
	r := Registry{Path: filepath.Join(t.TempDir(), "tenants.json")}
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	var wg sync.WaitGroup
	got := make([][]uint32, 8)
	for w := range got {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for _, n := range names {
				i, err := r.Index(n)
				if err != nil {
					t.Error(err)
				}
				got[w] = append(got[w], i)
			}
		}(w)
	}
	wg.Wait()
	seen := map[uint32]bool{}
	for i := range names {
		for w := range got {
			if got[w][i] != got[0][i] {
				t.Errorf("tenant %s got index %d and %d", names[i], got[0][i], got[w][i])
			}
		}
		if seen[got[0][i]] {
			t.Errorf("index %d handed out twice", got[0][i])
		}
		seen[got[0][i]] = true
	}
	// Indexes survive a "restart" (a new Registry on the same file).
	again, err := Registry{Path: r.Path}.Index("c")
	if err != nil || again != got[0][2] {
		t.Errorf("after reopen c = %d, %v; want %d", again, err, got[0][2])
	}
	if _, err := r.Index("Bad/Name"); err == nil {
		t.Error("invalid tenant name accepted")
	}
}

// Several processes allocating at once must agree.
func TestRegistryProcesses(t *testing.T) {
	if os.Getenv("BERTH_TENANT_HELPER") != "" {
		r := Registry{Path: os.Getenv("BERTH_TENANT_HELPER")}
		for _, n := range []string{"x1", "x2", "x3", "x4", "x5"} {
			if _, err := r.Index(n); err != nil {
				os.Exit(1)
			}
		}
		os.Exit(0)
	}
	path := filepath.Join(t.TempDir(), "tenants.json")
	var cmds []*exec.Cmd
	for i := 0; i < 4; i++ {
		c := exec.Command(os.Args[0], "-test.run=TestRegistryProcesses")
		c.Env = append(os.Environ(), "BERTH_TENANT_HELPER="+path)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Registry{Path: path}.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 6 || m[Default] != 0 {
		t.Fatalf("want default at 0 plus 5 tenants, got %v", m)
	}
	seen := map[uint32]bool{}
	for _, i := range m {
		if seen[i] || i >= 6 {
			t.Errorf("bad index set %v", m)
		}
		seen[i] = true
	}
}

func TestRegistryDefaultIsZero(t *testing.T) {
	r := Registry{Path: filepath.Join(t.TempDir(), "tenants.json")}
	if i, err := r.Index("team-a"); err != nil || i != 1 {
		t.Fatalf("first named tenant = %d, %v; want 1 (0 is the default tenant)", i, err)
	}
	if i, err := r.Index(Default); err != nil || i != 0 {
		t.Fatalf("default = %d, %v; want 0", i, err)
	}
}

func TestResolveRequireMapping(t *testing.T) {
	dir := t.TempDir()
	mapping := filepath.Join(dir, "map.json")
	if err := os.WriteFile(mapping, []byte(`{"dev":"blue"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		s       Sources
		want    string
		notYet  bool
		message string
	}{
		{"mapped namespace", Sources{Namespace: "dev", MappingFile: mapping, RequireMapping: true}, "blue", false, ""},
		{"unmapped namespace waits", Sources{Namespace: "new", MappingFile: mapping, RequireMapping: true}, "", true, `namespace "new"`},
		{"no mapping file yet waits", Sources{Namespace: "dev", MappingFile: filepath.Join(dir, "nope"), RequireMapping: true}, "", true, `namespace "dev"`},
		{"annotation still wins", Sources{Namespace: "new", MappingFile: mapping, RequireMapping: true, Annotations: map[string]string{AnnotationKey: "red"}}, "red", false, ""},
		{"no namespace is the default tenant", Sources{MappingFile: mapping, RequireMapping: true}, Default, false, ""},
		{"without RequireMapping the namespace is its tenant", Sources{Namespace: "new", MappingFile: mapping}, "new", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.s)
			var ny *NotYetError
			if tc.notYet {
				if !errors.As(err, &ny) || !strings.Contains(err.Error(), tc.message) {
					t.Fatalf("err = %v, want a NotYetError mentioning %q", err, tc.message)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestRegistryLookup(t *testing.T) {
	r := Registry{Path: filepath.Join(t.TempDir(), "sub", "tenants.json")}
	if _, ok, err := r.Lookup("blue"); ok || err != nil {
		t.Fatalf("missing registry: ok=%v err=%v, want not found and no error", ok, err)
	}
	if _, err := os.Stat(filepath.Dir(r.Path)); err == nil {
		t.Error("Lookup created the registry's directory; a reader must not write")
	}
	if _, err := r.Index("blue"); err != nil {
		t.Fatal(err)
	}
	if i, ok, err := r.Lookup("blue"); !ok || err != nil || i != 1 {
		t.Fatalf("Lookup(blue) = %d, %v, %v; want 1", i, ok, err)
	}
	if _, ok, _ := r.Lookup("green"); ok {
		t.Error("Lookup assigned an index")
	}
	if err := os.WriteFile(r.Path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Lookup("blue"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt registry: err = %v", err)
	}
}

func TestRegistryMirror(t *testing.T) {
	for _, tc := range []struct {
		name      string
		local     map[string]uint32 // nil: no file
		assign    map[string]uint32
		want      map[string]uint32
		conflicts []Conflict
		changed   bool
		wantErr   string
	}{
		{
			name:    "empty node takes the cluster's table",
			assign:  map[string]uint32{Default: 0, "blue": 1, "green": 2},
			want:    map[string]uint32{Default: 0, "blue": 1, "green": 2},
			changed: true,
		},
		{
			name:   "agreeing registry is not rewritten",
			local:  map[string]uint32{Default: 0, "blue": 1},
			assign: map[string]uint32{Default: 0, "blue": 1},
			want:   map[string]uint32{Default: 0, "blue": 1},
		},
		{
			name:      "swapped local indexes: the cluster wins",
			local:     map[string]uint32{Default: 0, "green": 1, "blue": 2},
			assign:    map[string]uint32{Default: 0, "blue": 1, "green": 2},
			want:      map[string]uint32{Default: 0, "blue": 1, "green": 2},
			conflicts: []Conflict{{Tenant: "blue", Local: 2, Cluster: 1}, {Tenant: "green", Local: 1, Cluster: 2}},
			changed:   true,
		},
		{
			name:      "local-only tenant on a cluster index is dropped",
			local:     map[string]uint32{Default: 0, "old": 1},
			assign:    map[string]uint32{Default: 0, "blue": 1},
			want:      map[string]uint32{Default: 0, "blue": 1},
			conflicts: []Conflict{{Tenant: "old", Local: 1, Dropped: true}},
			changed:   true,
		},
		{
			// An older copy of the table must not take back what a
			// newer one mirrored.
			name:   "tenants the assignment does not mention stay",
			local:  map[string]uint32{Default: 0, "blue": 1, "green": 2},
			assign: map[string]uint32{Default: 0, "blue": 1},
			want:   map[string]uint32{Default: 0, "blue": 1, "green": 2},
		},
		{
			name:    "duplicate index refused",
			assign:  map[string]uint32{Default: 0, "a": 3, "b": 3},
			wantErr: "index 3",
		},
		{
			name:    "invalid name refused",
			assign:  map[string]uint32{"Not/Valid": 3},
			wantErr: "not a valid name",
		},
		{
			name:    "index out of range refused",
			assign:  map[string]uint32{"a": MaxTenants},
			wantErr: "not below",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Registry{Path: filepath.Join(t.TempDir(), "tenants.json")}
			if tc.local != nil {
				b, _ := json.Marshal(registryFile{Tenants: tc.local, Next: uint32(len(tc.local))})
				if err := os.WriteFile(r.Path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			conflicts, changed, err := r.Mirror(tc.assign)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(conflicts, tc.conflicts) {
				t.Errorf("conflicts = %+v, want %+v", conflicts, tc.conflicts)
			}
			if changed != tc.changed {
				t.Errorf("changed = %v, want %v", changed, tc.changed)
			}
			got, err := r.List()
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("registry = %v, %v; want %v", got, err, tc.want)
			}
			// A later local assignment (standalone use of the same
			// file) must not reuse a mirrored index.
			f, _ := r.read()
			for n, i := range f.Tenants {
				if i >= f.Next {
					t.Errorf("next %d is not above %s's index %d", f.Next, n, i)
				}
			}
		})
	}
}
