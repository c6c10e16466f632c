package overlay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePeers(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    int    // number of peers when valid
		wantErr string // substring of the error; "" means valid
	}{
		{name: "good", want: 3, json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"},
			{"nodeName":"n3","underlayIP":"2001:db8::3","podCIDR":"fd00:10:3::/64"}]`},
		{name: "empty list is valid", json: `[]`, want: 0},
		{name: "unknown fields are ignored", want: 1,
			json: `[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24","zone":"a"}]`},
		{name: "bad JSON", json: `[{"nodeName":"n1",]`, wantErr: "invalid JSON"},
		{name: "not a list", json: `{"nodeName":"n1"}`, wantErr: "invalid JSON"},
		{name: "wrong field type", json: `[{"nodeName":1}]`, wantErr: "invalid JSON"},
		{name: "empty document", json: "  \n", wantErr: "empty document"},
		{name: "null", json: `null`, wantErr: "got null"},
		{name: "trailing data", json: `[] []`, wantErr: "unexpected data"},
		{name: "missing nodeName", wantErr: "peers[1].nodeName: missing", json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"}]`},
		{name: "blank nodeName", wantErr: "peers[0].nodeName: missing",
			json: `[{"nodeName":"  ","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"}]`},
		{name: "padded nodeName", wantErr: `peers[0].nodeName: " n1" has leading or trailing whitespace`,
			json: `[{"nodeName":" n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"}]`},
		{name: "missing underlayIP", wantErr: "peers[0].underlayIP: missing",
			json: `[{"nodeName":"n1","podCIDR":"198.18.64.0/24"}]`},
		{name: "missing podCIDR", wantErr: "peers[0].podCIDR: missing",
			json: `[{"nodeName":"n1","underlayIP":"198.18.0.1"}]`},
		{name: "bad IP", wantErr: `peers[1].underlayIP: invalid IP "198.18.0.300"`, json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n2","underlayIP":"198.18.0.300","podCIDR":"198.18.65.0/24"}]`},
		{name: "IP with prefix", wantErr: `peers[0].underlayIP: invalid IP "198.18.0.1/24"`,
			json: `[{"nodeName":"n1","underlayIP":"198.18.0.1/24","podCIDR":"198.18.64.0/24"}]`},
		{name: "unspecified IP", wantErr: "peers[0].underlayIP: \"0.0.0.0\" is not a usable unicast VTEP address",
			json: `[{"nodeName":"n1","underlayIP":"0.0.0.0","podCIDR":"198.18.64.0/24"}]`},
		{name: "multicast IP", wantErr: "peers[0].underlayIP",
			json: `[{"nodeName":"n1","underlayIP":"239.1.1.1","podCIDR":"198.18.64.0/24"}]`},
		{name: "bad CIDR", wantErr: `peers[2].podCIDR: invalid CIDR "x"`, json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"},
			{"nodeName":"n3","underlayIP":"198.18.0.3","podCIDR":"x"}]`},
		{name: "CIDR without length", wantErr: `peers[0].podCIDR: invalid CIDR "198.18.64.0"`,
			json: `[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0"}]`},
		{name: "CIDR with host bits", wantErr: "peers[0].podCIDR: \"198.18.64.0/16\" is not a network address (the network is 198.18.0.0/16)",
			json: `[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/16"}]`},
		{name: "duplicate nodeName", wantErr: `peers[1].nodeName: duplicate "n1" (also peers[0])`, json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n1","underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"}]`},
		{name: "duplicate underlayIP", wantErr: `peers[1].underlayIP: duplicate "198.18.0.1" (also peers[0])`, json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n2","underlayIP":"198.18.0.1","podCIDR":"198.18.65.0/24"}]`},
		{name: "duplicate underlayIP in mapped form", wantErr: `peers[1].underlayIP: duplicate`, json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n2","underlayIP":"::ffff:198.18.0.1","podCIDR":"198.18.65.0/24"}]`},
		{name: "duplicate podCIDR", wantErr: "peers[1].podCIDR: 198.18.64.0/24 overlaps peers[0].podCIDR 198.18.64.0/24", json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.64.0/24"}]`},
		{name: "overlapping podCIDR", wantErr: "peers[1].podCIDR: 198.18.64.128/25 overlaps peers[0].podCIDR", json: `[
			{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
			{"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.64.128/25"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePeers([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParsePeers() = %v, want error containing %q", got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePeers() error = %q, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePeers() error = %v", err)
			}
			if len(got) != tt.want {
				t.Fatalf("ParsePeers() returned %d peers, want %d", len(got), tt.want)
			}
		})
	}
}

func TestLoadPeers(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(`[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	peers, err := LoadPeers(good)
	if err != nil {
		t.Fatalf("LoadPeers: %v", err)
	}
	want := Peer{NodeName: "n1", UnderlayIP: "198.18.0.1", PodCIDR: "198.18.64.0/24"}
	if len(peers) != 1 || peers[0] != want {
		t.Fatalf("LoadPeers = %+v, want [%+v]", peers, want)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"x"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadPeers(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `peers[0].podCIDR: invalid CIDR "x"`) {
		t.Fatalf("LoadPeers(bad) error = %v, want the path and the field", err)
	}

	if _, err := LoadPeers(filepath.Join(dir, "missing.json")); !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("LoadPeers(missing) error = %v, want a not-exist error", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}
