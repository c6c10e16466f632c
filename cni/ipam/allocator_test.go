package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

const testNet = "berthnet"

func newAlloc(t *testing.T, cfg Config) *Allocator {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	a, err := New(testNet, &cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func att(id string) Attachment { return Attachment{ContainerID: id, IfName: "eth0"} }

func mustAlloc(t *testing.T, a *Allocator, at Attachment) netip.Prefix {
	t.Helper()
	p, _, err := a.Allocate(at)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", at, err)
	}
	return p
}

// addrFiles returns the address files present in dir, by name.
func addrFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, ok := addrFromFileName(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	return out
}

func tmpFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAllocateBasics(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "198.18.10.0/24"})
	p, gw, err := a.Allocate(att("c1"))
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "198.18.10.2/24" || gw.String() != "198.18.10.1" {
		t.Fatalf("Allocate = %s gw %s, want 198.18.10.2/24 gw 198.18.10.1", p, gw)
	}
	// Idempotent: the same attachment gets the same address, and no
	// second file appears.
	for i := 0; i < 3; i++ {
		if again := mustAlloc(t, a, att("c1")); again != p {
			t.Fatalf("re-Allocate = %s, want %s", again, p)
		}
	}
	// Same container, other interface: a different attachment.
	if other := mustAlloc(t, a, Attachment{ContainerID: "c1", IfName: "net1"}); other == p {
		t.Fatalf("second interface got the same address %s", other)
	}
	if n := len(addrFiles(t, a.Dir())); n != 2 {
		t.Fatalf("%d address files, want 2", n)
	}
	got, ok, err := a.Get(att("c1"))
	if err != nil || !ok || got != p {
		t.Fatalf("Get = %s %v %v, want %s", got, ok, err, p)
	}
	if _, ok, err := a.Get(att("nobody")); ok || err != nil {
		t.Fatalf("Get(nobody) = %v %v, want false nil", ok, err)
	}
	data, err := os.ReadFile(filepath.Join(a.Dir(), "198.18.10.2"))
	if err != nil || string(data) != `{"containerID":"c1","ifname":"eth0"}` {
		t.Fatalf("address file = %q, %v", data, err)
	}
	if _, _, err := a.Allocate(Attachment{IfName: "eth0"}); err == nil {
		t.Fatal("Allocate with empty container ID succeeded")
	}
}

func TestRoundRobin(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "10.0.0.0/29"}) // .2-.6 allocatable
	seq := func(ids ...string) []string {
		var out []string
		for _, id := range ids {
			out = append(out, mustAlloc(t, a, att(id)).Addr().String())
		}
		return out
	}
	if got := seq("a", "b", "c"); strings.Join(got, " ") != "10.0.0.2 10.0.0.3 10.0.0.4" {
		t.Fatalf("first allocations = %v", got)
	}
	if err := a.Release(att("b")); err != nil {
		t.Fatal(err)
	}
	// The freed .3 must not be reused while untouched addresses remain;
	// after .6 the scan wraps around and finds it.
	if got := seq("d", "e", "f"); strings.Join(got, " ") != "10.0.0.5 10.0.0.6 10.0.0.3" {
		t.Fatalf("after release = %v, want .5 .6 .3", got)
	}
}

func TestLastReservedHint(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"continues after hint", "10.0.0.40", "10.0.0.41"},
		{"garbage starts at beginning", "not an ip", "10.0.0.2"},
		{"other family starts at beginning", "fd00::5", "10.0.0.2"},
		{"outside subnet starts at beginning", "192.168.0.9", "10.0.0.2"},
		{"last of pool wraps", "10.0.0.254", "10.0.0.2"},
		{"inside a reserved span skips it", "10.0.0.99", "10.0.0.112"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAlloc(t, Config{Subnet: "10.0.0.0/24", Reserved: []string{"10.0.0.96/28"}})
			if err := os.MkdirAll(a.Dir(), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(a.Dir(), lastReservedName), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := mustAlloc(t, a, att("x")).Addr().String(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNeverHandsOutExcluded(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // the complete set of addresses handed out, in order
	}{
		{
			name: "v4 network broadcast gateway",
			cfg:  Config{Subnet: "10.0.0.0/29"},
			want: []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"},
		},
		{
			name: "custom gateway and reserved",
			cfg:  Config{Subnet: "10.0.0.0/28", Gateway: "10.0.0.9", Reserved: []string{"10.0.0.1", "10.0.0.4/30", "10.0.0.13"}},
			want: []string{"10.0.0.2", "10.0.0.3", "10.0.0.8", "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.14"},
		},
		{
			name: "ranges only",
			cfg:  Config{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.250", Ranges: []Range{{"10.0.0.0", "10.0.0.2"}}},
			want: []string{"10.0.0.2", "10.0.0.250", "10.0.0.251", "10.0.0.252", "10.0.0.253", "10.0.0.254"},
		},
		{
			name: "v6 no broadcast",
			cfg:  Config{Subnet: "fd00::/125", Reserved: []string{"fd00::4"}},
			want: []string{"fd00::2", "fd00::3", "fd00::5", "fd00::6", "fd00::7"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAlloc(t, tc.cfg)
			var got []string
			for i := 0; ; i++ {
				p, _, err := a.Allocate(att(fmt.Sprint("c", i)))
				if errors.Is(err, ErrExhausted) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, p.Addr().String())
				if i > 300 {
					t.Fatal("never exhausted")
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("handed out %v, want %v", got, tc.want)
			}
		})
	}
}

func TestExhaustion(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "198.18.10.0/29"})
	for i := 0; i < 5; i++ {
		mustAlloc(t, a, att(fmt.Sprint("c", i)))
	}
	_, _, err := a.Allocate(att("one-too-many"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted", err)
	}
	var te *types.Error
	if !errors.As(err, &te) || te.Code != ErrCodeExhausted {
		t.Fatalf("err = %#v, want *types.Error code %d", err, ErrCodeExhausted)
	}
	if want := "ipam.subnet 198.18.10.0/29: no free address (5 of 5 in use)"; te.Msg != want {
		t.Errorf("msg = %q, want %q", te.Msg, want)
	}
	// Existing holders still get their address back when full.
	if _, _, err := a.Allocate(att("c3")); err != nil {
		t.Fatalf("idempotent Allocate on full pool: %v", err)
	}
	if err := a.Release(att("c2")); err != nil {
		t.Fatal(err)
	}
	if p := mustAlloc(t, a, att("one-too-many")); p.Addr().String() != "198.18.10.4" {
		t.Fatalf("after release got %s, want the freed 198.18.10.4", p)
	}

	// With ranges, the message names them.
	r := newAlloc(t, Config{Subnet: "198.18.10.0/24", RangeStart: "198.18.10.10", RangeEnd: "198.18.10.11"})
	mustAlloc(t, r, att("a"))
	mustAlloc(t, r, att("b"))
	_, _, err = r.Allocate(att("c"))
	if !errors.As(err, &te) || !strings.Contains(te.Msg, "ranges 198.18.10.10-198.18.10.11") || !strings.Contains(te.Msg, "2 of 2") {
		t.Fatalf("ranges exhaustion err = %v", err)
	}
}

func TestIPv6(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "fd00:10::/64"})
	p, gw, err := a.Allocate(att("v6"))
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "fd00:10::2/64" || gw.String() != "fd00:10::1" {
		t.Fatalf("got %s gw %s", p, gw)
	}
	if files := addrFiles(t, a.Dir()); len(files) != 1 || files[0] != "fd00_10__2" {
		t.Fatalf("files = %v, want [fd00_10__2]", files)
	}
	l, err := a.List()
	if err != nil || l[p.Addr()] != att("v6") {
		t.Fatalf("List = %v %v", l, err)
	}
	// A reserved half of a /64 is skipped in one step, not 2^63.
	b := newAlloc(t, Config{Subnet: "fd00:10::/64", Reserved: []string{"fd00:10::/65"}})
	if got := mustAlloc(t, b, att("x")).Addr().String(); got != "fd00:10:0:0:8000::" {
		t.Fatalf("got %s, want fd00:10:0:0:8000::", got)
	}
}

func TestBigSubnet(t *testing.T) {
	// A /16 must cost neither a pass over 65k addresses nor a read of
	// every allocation per operation.
	a := newAlloc(t, Config{Subnet: "10.20.0.0/16"})
	const n = 200
	for i := 0; i < n; i++ {
		mustAlloc(t, a, att(fmt.Sprint("c", i)))
	}
	before := recordReads.Load()
	if p := mustAlloc(t, a, att("new")); p.Addr().String() != "10.20.0.202" {
		t.Fatalf("after %d allocations got %s, want 10.20.0.202", n, p)
	}
	if p := mustAlloc(t, a, att("c150")); p.Addr().String() != "10.20.0.152" {
		t.Fatalf("re-Allocate c150 = %s, want 10.20.0.152", p)
	}
	if p, ok, err := a.Get(att("c199")); err != nil || !ok || p.Addr().String() != "10.20.0.201" {
		t.Fatalf("Get c199 = %s %v %v", p, ok, err)
	}
	if err := a.Release(att("c7")); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(att("never")); err != nil {
		t.Fatal(err)
	}
	// One read each for the re-Allocate, Get and Release that find an
	// entry; none for the misses.
	if reads := recordReads.Load() - before; reads > 3 {
		t.Fatalf("5 operations read %d address files with %d allocations, want <= 3", reads, n)
	}
}

// withBootID makes the package see another kernel boot for the test.
func withBootID(t *testing.T, id string) {
	t.Helper()
	old := bootID
	bootID = func() string { return id }
	t.Cleanup(func() { bootID = old })
}

func indexEntries(t *testing.T, dir string) map[string]indexEntry {
	t.Helper()
	names, err := readDirNames(filepath.Join(dir, indexDirName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	out := map[string]indexEntry{}
	for _, n := range names {
		if n == indexBootName {
			continue
		}
		e, ok := readIndexFile(filepath.Join(dir, indexDirName, n))
		if !ok {
			t.Fatalf("index entry %s is unreadable", n)
		}
		out[n] = e
	}
	return out
}

// checkIndex asserts the invariant lookups rely on: every holder of an
// address has an index entry naming exactly that address.
func checkIndex(t *testing.T, a *Allocator) {
	t.Helper()
	l, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	idx := indexEntries(t, a.Dir())
	for addr, at := range l {
		if at == (Attachment{}) {
			continue
		}
		e, ok := idx[indexKey(at)]
		if !ok || e.Address != addr.String() || e.ContainerID != at.ContainerID || e.IfName != at.IfName {
			t.Fatalf("holder %v of %s has index entry %+v (present %v)", at, addr, e, ok)
		}
	}
}

func TestIndexRebuiltAfterReboot(t *testing.T) {
	withBootID(t, "boot-1")
	a := newAlloc(t, Config{Subnet: "10.0.0.0/24"})
	want := map[string]string{}
	for i := 0; i < 5; i++ {
		want[fmt.Sprint("c", i)] = mustAlloc(t, a, att(fmt.Sprint("c", i))).String()
	}
	checkIndex(t, a)

	// A power loss may drop unsynced index renames. Model the worst case,
	// the whole index gone, then boot again.
	if err := os.RemoveAll(filepath.Join(a.Dir(), indexDirName)); err != nil {
		t.Fatal(err)
	}
	withBootID(t, "boot-2")
	if p, ok, err := a.Get(att("c2")); err != nil || !ok || p.String() != want["c2"] {
		t.Fatalf("Get(c2) after reboot = %s %v %v, want %s", p, ok, err, want["c2"])
	}
	if p := mustAlloc(t, a, att("c3")); p.String() != want["c3"] {
		t.Fatalf("re-Allocate(c3) after reboot = %s, want %s", p, want["c3"])
	}
	if err := a.Release(att("c4")); err != nil {
		t.Fatal(err)
	}
	if l, _ := a.List(); len(l) != 4 {
		t.Fatalf("List after release = %v, want 4 entries", l)
	}
	checkIndex(t, a)
	if n := len(indexEntries(t, a.Dir())); n != 4 {
		t.Fatalf("%d index entries, want 4", n)
	}
	if b, err := os.ReadFile(filepath.Join(a.Dir(), indexDirName, indexBootName)); err != nil || string(b) != "boot-2" {
		t.Fatalf("boot_id = %q %v", b, err)
	}
}

func TestIndexDamageAndStaleEntries(t *testing.T) {
	withBootID(t, "boot-1")
	a := newAlloc(t, Config{Subnet: "10.0.0.0/24"})
	p0 := mustAlloc(t, a, att("c0"))
	p1 := mustAlloc(t, a, att("c1"))
	writeIdx := func(at Attachment, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(a.Dir(), indexDirName, indexKey(at)), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// A damaged entry makes the lookup fall back to reading everything.
	writeIdx(att("c1"), "")
	if p, ok, err := a.Get(att("c1")); err != nil || !ok || p != p1 {
		t.Fatalf("Get with damaged entry = %s %v %v, want %s", p, ok, err, p1)
	}
	if p := mustAlloc(t, a, att("c1")); p != p1 {
		t.Fatalf("re-Allocate with damaged entry = %s, want %s", p, p1)
	}

	// A writer killed between index entry and address file leaves an
	// entry pointing at an address it never got, possibly one that went
	// to someone else since. It must not be believed.
	writeIdx(att("ghost"), fmt.Sprintf(`{"containerID":"ghost","ifname":"eth0","address":%q}`, p0.Addr()))
	writeIdx(att("ghost2"), `{"containerID":"ghost2","ifname":"eth0","address":"10.0.0.200"}`)
	if _, ok, _ := a.Get(att("ghost")); ok {
		t.Fatal("Get believed a stale entry pointing at another holder")
	}
	if p := mustAlloc(t, a, att("ghost")); p == p0 || p == p1 {
		t.Fatalf("ghost was handed %s which is already held", p)
	}
	if err := a.Release(att("ghost2")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(a.Dir(), indexDirName, indexKey(att("ghost2")))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Release left the stale entry: %v", err)
	}
	checkIndex(t, a)

	// GC drops the entries of everything it releases and any stray file.
	writeIdx(att("stray"), "junk")
	if _, err := a.GC([]Attachment{att("c0")}); err != nil {
		t.Fatal(err)
	}
	idx := indexEntries(t, a.Dir())
	if len(idx) != 1 || idx[indexKey(att("c0"))].Address != p0.Addr().String() {
		t.Fatalf("index after GC = %v, want only c0", idx)
	}
}

func TestNoBootID(t *testing.T) {
	// Without a boot ID the index is rebuilt on every operation: slow but
	// still correct.
	withBootID(t, "")
	a := newAlloc(t, Config{Subnet: "10.0.0.0/24"})
	p := mustAlloc(t, a, att("c0"))
	if q := mustAlloc(t, a, att("c0")); q != p {
		t.Fatalf("re-Allocate = %s, want %s", q, p)
	}
	if err := os.RemoveAll(filepath.Join(a.Dir(), indexDirName)); err != nil {
		t.Fatal(err)
	}
	if q, ok, err := a.Get(att("c0")); err != nil || !ok || q != p {
		t.Fatalf("Get = %s %v %v", q, ok, err)
	}
	if _, err := os.Stat(filepath.Join(a.Dir(), indexDirName, indexBootName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("boot_id written without a boot ID: %v", err)
	}
}

func TestReleaseAndMissingStore(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "10.0.0.0/24"})
	// Nothing was ever allocated: no directory exists, and none of the
	// read-only or releasing operations may create one or fail.
	if err := a.Release(att("ghost")); err != nil {
		t.Fatalf("Release on missing store: %v", err)
	}
	if _, ok, err := a.Get(att("ghost")); ok || err != nil {
		t.Fatalf("Get on missing store: %v %v", ok, err)
	}
	if l, err := a.List(); err != nil || len(l) != 0 {
		t.Fatalf("List on missing store: %v %v", l, err)
	}
	if rel, err := a.GC(nil); err != nil || len(rel) != 0 {
		t.Fatalf("GC on missing store: %v %v", rel, err)
	}
	if _, err := os.Stat(a.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("store directory was created: %v", err)
	}

	p := mustAlloc(t, a, att("c1"))
	for i := 0; i < 2; i++ {
		if err := a.Release(att("c1")); err != nil {
			t.Fatalf("Release #%d: %v", i, err)
		}
	}
	if _, ok, _ := a.Get(att("c1")); ok {
		t.Fatal("still allocated after Release")
	}
	if _, err := os.Stat(filepath.Join(a.Dir(), p.Addr().String())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("address file survived Release: %v", err)
	}

	// A data dir whose parent is a regular file cannot exist at all.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b := newAlloc(t, Config{Subnet: "10.0.0.0/24", DataDir: f})
	if err := b.Release(att("c1")); err != nil {
		t.Fatalf("Release under a file: %v", err)
	}
}

func TestGC(t *testing.T) {
	tests := []struct {
		name      string
		allocated []string
		valid     []string
		released  []string
	}{
		{"keep some", []string{"a", "b", "c", "d"}, []string{"b", "d", "zzz"}, []string{"10.0.0.2", "10.0.0.4"}},
		{"keep all", []string{"a", "b"}, []string{"a", "b"}, nil},
		{"release all", []string{"a", "b"}, nil, []string{"10.0.0.2", "10.0.0.3"}},
		{"nothing allocated", nil, []string{"a"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAlloc(t, Config{Subnet: "10.0.0.0/24"})
			for _, id := range tc.allocated {
				mustAlloc(t, a, att(id))
			}
			var valid []Attachment
			for _, id := range tc.valid {
				valid = append(valid, att(id))
			}
			rel, err := a.GC(valid)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(rel) != fmt.Sprint(addrs(tc.released)) {
				t.Errorf("released %v, want %v", rel, tc.released)
			}
			l, err := a.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(l)+len(tc.released) != len(tc.allocated) {
				t.Errorf("List has %d entries after releasing %d of %d", len(l), len(tc.released), len(tc.allocated))
			}
			for _, v := range tc.valid {
				for _, al := range tc.allocated {
					if v == al {
						if _, ok, _ := a.Get(att(v)); !ok {
							t.Errorf("valid attachment %s lost its address", v)
						}
					}
				}
			}
		})
	}
}

func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestWritable(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "10.0.0.0/24"})
	if err := a.Writable(); err != nil {
		t.Fatalf("Writable on temp dir: %v", err)
	}
	if tmp := tmpFiles(t, a.Dir()); len(tmp) != 0 {
		t.Fatalf("probe left %v", tmp)
	}
	// chmod does not stop root, so make the store impossible instead: its
	// DataDir is a regular file, so MkdirAll must fail.
	f := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := newAlloc(t, Config{Subnet: "10.0.0.0/24", DataDir: f})
	err := b.Writable()
	if err == nil {
		t.Fatal("Writable succeeded below a regular file")
	}
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrIOFailure {
		t.Fatalf("err = %v, want *types.Error code %d", err, types.ErrIOFailure)
	}
	if _, _, err := b.Allocate(att("x")); err == nil {
		t.Fatal("Allocate succeeded below a regular file")
	}
}

func TestNetworkName(t *testing.T) {
	long := strings.Repeat("n", 254)
	tests := []struct {
		name string
		ok   bool
	}{
		{"berth", true},
		{"k8s-pod-network", true},
		{"a.b_c", true},
		{"..foo", true}, // just a name starting with dots, stays inside DataDir
		{strings.Repeat("n", 253), true},
		{"", false},
		{".", false},
		{"..", false},
		{"../etc", false},
		{"a/b", false},
		{"/abs", false},
		{"nul\x00x", false},
		{long, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%.20q", tc.name), func(t *testing.T) {
			dir := t.TempDir()
			a, err := New(tc.name, &Config{Subnet: "10.0.0.0/24", DataDir: dir})
			if tc.ok {
				if err != nil {
					t.Fatalf("New(%q) = %v", tc.name, err)
				}
				if filepath.Dir(a.Dir()) != dir {
					t.Fatalf("store %s escapes %s", a.Dir(), dir)
				}
				return
			}
			assertInvalid(t, err, "name")
		})
	}
	if _, err := New("x", nil); err == nil {
		t.Fatal("New with nil config succeeded")
	}
	assertInvalidErr := func(err error) {
		t.Helper()
		assertInvalid(t, err, "ipam.subnet")
	}
	_, err := New("x", &Config{Subnet: "nope"})
	assertInvalidErr(err)
}

func TestNewDoesNotModifyConfig(t *testing.T) {
	cfg := Config{Subnet: "10.0.0.0/24", DataDir: t.TempDir()}
	if _, err := New("n", &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway != "" {
		t.Fatalf("New filled Gateway = %q in the caller's config", cfg.Gateway)
	}
}

func TestConcurrentGoroutines(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Subnet: "198.18.10.0/24", DataDir: dir}
	// Several Allocators on one directory: goroutines sharing one only
	// meet at its mutex, the rest must be kept apart by flock alone.
	allocs := make([]*Allocator, 8)
	for i := range allocs {
		var err error
		if allocs[i], err = New(testNet, &cfg); err != nil {
			t.Fatal(err)
		}
	}
	const n = 64
	var wg sync.WaitGroup
	results := make([]netip.Prefix, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _, errs[i] = allocs[i%len(allocs)].Allocate(att(fmt.Sprint("g", i)))
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, p := range results {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if j, dup := seen[p]; dup {
			t.Fatalf("goroutines %d and %d both got %s", j, i, p)
		}
		seen[p] = i
	}
	l, err := allocs[0].List()
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != n {
		t.Fatalf("List has %d entries, want %d", len(l), n)
	}
	for i, p := range results {
		if l[p.Addr()] != att(fmt.Sprint("g", i)) {
			t.Fatalf("%s belongs to %v, want g%d", p, l[p.Addr()], i)
		}
	}
	if files := addrFiles(t, allocs[0].Dir()); len(files) != n {
		t.Fatalf("%d address files, want %d", len(files), n)
	}

	// Concurrent release of everything leaves an empty store.
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := allocs[i%3].Release(att(fmt.Sprint("g", i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if files := addrFiles(t, allocs[0].Dir()); len(files) != 0 {
		t.Fatalf("files left after releasing all: %v", files)
	}
}

func TestCrashLeftovers(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "198.18.10.0/29"}) // .2-.6
	dir := a.Dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A writer died mid-write, another left a zero-length record (an old,
	// non-atomic writer), a third file is garbage, one is JSON without an
	// owner, and an operator left a note that is not an address at all.
	write(".tmp-123456", `{"containerID":"half`)
	write(".tmp-probe-9", "ok")
	write("198.18.10.2", "")
	write("198.18.10.3", "\x00\x00garbage")
	write("198.18.10.4", `{"containerID":"","ifname":"eth0"}`)
	write("README", "do not touch")
	write(lastReservedName, "")

	p := mustAlloc(t, a, att("new"))
	if p.Addr().String() != "198.18.10.5" {
		t.Fatalf("allocated %s, want 198.18.10.5 (corrupt records must stay reserved)", p)
	}
	if tmp := tmpFiles(t, dir); len(tmp) != 0 {
		t.Fatalf("stale temp files not removed: %v", tmp)
	}
	l, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"198.18.10.2", "198.18.10.3", "198.18.10.4"} {
		if at, ok := l[netip.MustParseAddr(s)]; !ok || at != (Attachment{}) {
			t.Errorf("List[%s] = %v, %v; want zero Attachment, true", s, at, ok)
		}
	}
	// Release of a real attachment must not touch unknown records.
	if err := a.Release(Attachment{}); err != nil {
		t.Fatal(err)
	}
	if n := len(addrFiles(t, dir)); n != 4 {
		t.Fatalf("%d address files after Release(zero), want 4", n)
	}
	mustAlloc(t, a, att("other")) // .6
	if _, _, err := a.Allocate(att("full")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want exhaustion while corrupt records hold .2-.4, got %v", err)
	}
	// GC frees the records nobody owns and keeps the valid ones.
	rel, err := a.GC([]Attachment{att("new"), att("other")})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rel) != fmt.Sprint(addrs([]string{"198.18.10.2", "198.18.10.3", "198.18.10.4"})) {
		t.Fatalf("GC released %v", rel)
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Fatalf("GC removed a non-address file: %v", err)
	}
	mustAlloc(t, a, att("full"))
}

func TestSquatterDirectory(t *testing.T) {
	// A directory with an address name cannot be renamed over; it must
	// count as taken, and GC must not try to delete it.
	a := newAlloc(t, Config{Subnet: "10.0.0.0/24"})
	if err := os.MkdirAll(filepath.Join(a.Dir(), "10.0.0.2", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p := mustAlloc(t, a, att("x")); p.Addr().String() != "10.0.0.3" {
		t.Fatalf("got %s, want 10.0.0.3", p)
	}
	if rel, err := a.GC(nil); err != nil || fmt.Sprint(rel) != "[10.0.0.3]" {
		t.Fatalf("GC = %v %v", rel, err)
	}
}

func TestSubnetChanged(t *testing.T) {
	dir := t.TempDir()
	old := newAlloc(t, Config{Subnet: "10.0.0.0/24", DataDir: dir})
	mustAlloc(t, old, att("c"))
	// The network is reconfigured to another subnet; a retried ADD must
	// not return the old, now unroutable address.
	cur := newAlloc(t, Config{Subnet: "10.1.0.0/24", DataDir: dir})
	if _, ok, _ := cur.Get(att("c")); ok {
		t.Fatal("Get returned an address outside the current subnet")
	}
	if p := mustAlloc(t, cur, att("c")); p.String() != "10.1.0.2/24" {
		t.Fatalf("got %s, want 10.1.0.2/24", p)
	}
	if files := addrFiles(t, cur.Dir()); len(files) != 1 || files[0] != "10.1.0.2" {
		t.Fatalf("files = %v, want only the new address", files)
	}
	// Shrinking the ranges keeps an existing holder where it is.
	narrow := newAlloc(t, Config{Subnet: "10.1.0.0/24", RangeStart: "10.1.0.100", DataDir: dir})
	if p := mustAlloc(t, narrow, att("c")); p.String() != "10.1.0.2/24" {
		t.Fatalf("got %s after narrowing ranges, want the held 10.1.0.2/24", p)
	}
}

func TestErrorWrapping(t *testing.T) {
	a := newAlloc(t, Config{Subnet: "10.0.0.0/30"}) // only .2
	mustAlloc(t, a, att("a"))
	_, _, err := a.Allocate(att("b"))
	// The plugin's error path hands the *types.Error to skel verbatim,
	// so its text must stand alone.
	if err.Error() != "ipam.subnet 10.0.0.0/30: no free address (1 of 1 in use)" {
		t.Fatalf("Error() = %q", err.Error())
	}
}
