package cri

import (
	"runtime/debug"
	"testing"

	utilversion "k8s.io/apimachinery/pkg/util/version"
)

func TestResolveRuntimeVersion(t *testing.T) {
	vcs := func(main string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/berthdev/berth", Version: main}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name   string
		ldflag string
		bi     *debug.BuildInfo
		want   string
	}{
		{"ldflag semver wins", "0.1.0-dev", vcs("v0.0.0-20260101000000-0123456789ab"), "0.1.0-dev"},
		{"ldflag with v", "v1.2.3", nil, "1.2.3"},
		{"ldflag with build metadata", "1.2.3+abc.def", nil, "1.2.3+abc.def"},
		{"dev falls back to module pseudo-version", "dev", vcs("v0.0.0-20260101000000-0123456789ab+dirty"), "0.0.0-20260101000000-0123456789ab+dirty"},
		{"dev, devel module, vcs revision", "dev", vcs("(devel)", "vcs.revision", rev), "0.0.0-dev+0123456789ab"},
		{"dev, modified tree", "dev", vcs("(devel)", "vcs.revision", rev, "vcs.modified", "true"), "0.0.0-dev+0123456789ab.dirty"},
		{"dev, no vcs (-buildvcs=false)", "dev", vcs("(devel)"), "0.0.0-dev"},
		{"no build info at all", "dev", nil, "0.0.0-dev"},
		{"empty ldflag", "", vcs(""), "0.0.0-dev"},
		{"free-form label", "my build/2..x", vcs("(devel)"), "0.0.0-my-build-2.x"},
		{"label of only punctuation", "//", nil, "0.0.0-dev"},
		{"generic but not semver", "1.2", vcs("(devel)"), "0.0.0-1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := resolveRuntimeVersion(tc.ldflag, tc.bi)
			if got != tc.want {
				t.Fatalf("resolveRuntimeVersion(%q) = %q, want %q", tc.ldflag, got, tc.want)
			}
			// What kubelet does with it: ParseSemantic must accept it, or
			// the node shows berth-cri://Unknown.
			if _, err := utilversion.ParseSemantic(got); err != nil {
				t.Fatalf("kubelet cannot parse %q: %v", got, err)
			}
		})
	}
}

// The binary under test has build info; whatever it holds, the reported
// version must parse.
func TestRuntimeVersionOfThisBuildParses(t *testing.T) {
	if _, err := utilversion.ParseSemantic(RuntimeVersion()); err != nil {
		t.Fatalf("RuntimeVersion() = %q: %v", RuntimeVersion(), err)
	}
}
