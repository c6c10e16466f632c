package tenant

import (
	"os"
	"os/exec"
	"path/filepath"
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
