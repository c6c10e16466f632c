package cri

import (
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
)

// semverRE is the semantic version grammar kubelet's version parser
// (k8s.io/apimachinery/pkg/util/version.ParseSemantic) accepts. kubelet
// shows the runtime as "<name>://<runtime_version>" only when that version
// parses (semantic, or generic: leading dotted numbers); anything else,
// such as "dev", becomes "Unknown" in `kubectl get nodes -o wide`.
var semverRE = regexp.MustCompile(`^v?([0-9]+)\.([0-9]+)\.([0-9]+)(-([0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*))?(\+([0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*))?$`)

// RuntimeVersion is the runtime_version the Version RPC reports. It is
// always a semantic version, taken from the first of:
//   - Version (-X main.version=...), when it is one (a leading "v" is
//     dropped, as containerd and CRI-O report "2.2.9", not "v2.2.9");
//   - the main module's version as Go stamped it (a tag, or a VCS
//     pseudo-version such as v0.0.0-20260101120000-abcdef123456 when
//     built in a git checkout with -buildvcs);
//   - 0.0.0-<Version, made a valid pre-release>+<vcs revision>, so a
//     development build still says which commit it is.
func RuntimeVersion() string { return runtimeVersionOnce() }

var runtimeVersionOnce = sync.OnceValue(func() string {
	bi, _ := debug.ReadBuildInfo()
	return resolveRuntimeVersion(Version, bi)
})

func resolveRuntimeVersion(ldflag string, bi *debug.BuildInfo) string {
	if v := strings.TrimPrefix(strings.TrimSpace(ldflag), "v"); semverRE.MatchString(v) {
		return v
	}
	var rev, dirty string
	if bi != nil {
		if v := strings.TrimPrefix(bi.Main.Version, "v"); semverRE.MatchString(v) {
			return v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = ".dirty"
				}
			}
		}
	}
	v := "0.0.0-" + prerelease(ldflag)
	if rev = semverIdent(rev); rev != "" {
		v += "+" + rev[:min(len(rev), 12)] + dirty
	}
	return v
}

// prerelease turns a free-form version label ("dev", "my build/2") into
// dot-separated semver identifiers ("dev", "my-build-2"); empty is "dev".
func prerelease(label string) string {
	var ids []string
	for _, part := range strings.Split(label, ".") {
		if id := semverIdent(part); id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "dev"
	}
	return strings.Join(ids, ".")
}

// semverIdent keeps [0-9A-Za-z-] and turns every other run of characters
// into one "-", trimmed at both ends.
func semverIdent(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range s {
		ok := r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-'
		if !ok {
			dash = b.Len() > 0
			continue
		}
		if dash {
			b.WriteByte('-')
			dash = false
		}
		b.WriteRune(r)
	}
	return strings.Trim(b.String(), "-")
}
