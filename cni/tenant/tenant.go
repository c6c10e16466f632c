// Package tenant decides which tenant a pod belongs to and gives every
// tenant a stable small index, from which its BPF identity and its VXLAN
// network identifier (vniBase + index) are derived.
package tenant

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/atomicfile"
)

// Default is the tenant of pods that name none and have no namespace
// (callers other than Kubernetes).
const Default = "default"

// AnnotationKey is the pod label/annotation berth-cri passes on.
const AnnotationKey = "berth.dev/tenant"

// Defaults for the files.
const (
	DefaultRegistry    = "/var/lib/berth/tenants.json"
	DefaultMappingFile = "/var/lib/berth/namespace-tenants.json"
)

// MaxTenants bounds the index space (and so the VNIs a node may use).
const MaxTenants = 4096

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$`)

// Valid reports whether name can be a tenant: a DNS-label-like string, so
// it is safe in file contents, logs and metric labels.
func Valid(name string) bool { return nameRE.MatchString(name) }

// Registry modes (tenancy.registryMode): who hands out tenant indexes.
const (
	// ModeLocal: the CNI plugin assigns an index in this node's registry
	// the first time it meets a tenant. Right for a single node or for
	// nodes whose registries are provisioned alike; across independent
	// nodes the first-seen order differs, and so would the VNIs.
	ModeLocal = "local"
	// ModeCluster: berth-netd --kubernetes assigns indexes cluster-wide
	// (the berth-system/berth-tenants ConfigMap) and mirrors them into
	// every node's registry; the plugin only reads the registry, and a
	// tenant that is not there yet is a retryable error (ErrNotYet).
	ModeCluster = "cluster"
)

// NotYetError says that something the pod needs has not reached this node
// yet (a tenant index, a namespace mapping) and will once berth-netd has
// caught up with the API; the CNI plugin turns it into code 11 (try again
// later), so the runtime retries the sandbox instead of failing it.
type NotYetError struct{ Msg string }

func (e *NotYetError) Error() string { return e.Msg }

// MismatchError says that a pod asked for a tenant other than the one its
// namespace belongs to, where the namespace decides (Sources.NamespaceDecides).
type MismatchError struct {
	From            string // the pod-supplied source, e.g. "runtimeConfig.tenant"
	Asked           string // the tenant it names
	Namespace       string
	NamespaceTenant string // the tenant the namespace mapping gives
}

func (e *MismatchError) Error() string {
	from := e.From
	if from == srcRuntimeConfig {
		// What a pod owner recognises: berth-cri fills it from the pod.
		from += ", from the pod's " + AnnotationKey + " label or annotation"
	}
	return fmt.Sprintf("the pod asks for tenant %q (%s) but its namespace %q belongs to tenant %q; "+
		"with tenancy.registryMode %q the Namespace's %s label decides, so remove the pod's %s label and annotation or set them to %q",
		e.Asked, from, e.Namespace, e.NamespaceTenant, ModeCluster, AnnotationKey, AnnotationKey, e.NamespaceTenant)
}

const srcRuntimeConfig = "runtimeConfig.tenant"

// Sources are the places a tenant can come from, most specific first.
type Sources struct {
	RuntimeConfig string            // runtimeConfig.tenant (capability "tenant")
	Args          string            // CNI_ARGS BERTH_TENANT
	Annotations   map[string]string // io.kubernetes.cri.pod-annotations
	Namespace     string            // CNI_ARGS K8S_POD_NAMESPACE
	MappingFile   string            // namespace -> tenant, kept by berth-netd
	// RequireMapping: a namespace missing from MappingFile is one
	// berth-netd has not seen yet (it maps every namespace of the
	// cluster), not a tenant of its own name. Resolve then returns a
	// *NotYetError instead of the namespace fallback.
	RequireMapping bool
	// NamespaceDecides makes the namespace's tenant authoritative when
	// the pod has a namespace (tenancy.registryMode "cluster"): the
	// sources above it are what the pod's owner wrote (berth-cri turns the
	// pod's berth.dev/tenant label or annotation into runtimeConfig.tenant
	// and passes the annotations), while the Namespace label is the
	// cluster admin's. They may repeat the namespace's tenant; naming
	// another is a *MismatchError.
	NamespaceDecides bool
}

// Resolve picks the tenant: runtimeConfig, then CNI args, then the pod
// annotation, then the namespace mapping file, then the namespace itself.
// With NamespaceDecides and a namespace, the namespace's tenant is the
// answer and the other sources may only agree with it.
func Resolve(s Sources) (string, error) {
	var podSet []podSource
	for _, c := range []podSource{
		{srcRuntimeConfig, s.RuntimeConfig},
		{"CNI_ARGS BERTH_TENANT", s.Args},
		{"annotation " + AnnotationKey, s.Annotations[AnnotationKey]},
	} {
		if c.v == "" {
			continue
		}
		if !Valid(c.v) {
			return "", fmt.Errorf("%s: %q is not a valid tenant name (lower-case letters, digits, '-', '_', '.', at most 63)", c.from, c.v)
		}
		podSet = append(podSet, c)
	}
	if s.NamespaceDecides && s.Namespace != "" {
		// A refusal, not "ignore the pod's choice with a warning": the pod
		// would run with an identity its owner did not ask for (and
		// perhaps relies on not having), and a warning would land in a
		// node log the owner cannot read, while a failed sandbox shows
		// the reason in the pod's events. The namespace is resolved
		// first, so a namespace berth-netd has not mapped yet still
		// waits (code 11) rather than being judged on partial data.
		nsTenant, err := namespaceTenant(s)
		if err != nil {
			return "", err
		}
		for _, c := range podSet {
			if c.v != nsTenant {
				return "", &MismatchError{From: c.from, Asked: c.v, Namespace: s.Namespace, NamespaceTenant: nsTenant}
			}
		}
		return nsTenant, nil
	}
	if len(podSet) > 0 {
		return podSet[0].v, nil
	}
	if s.Namespace == "" {
		return Default, nil
	}
	return namespaceTenant(s)
}

type podSource struct{ from, v string }

// namespaceTenant is the tenant of s.Namespace: its mapping entry, or the
// namespace's own name where a missing entry is allowed.
func namespaceTenant(s Sources) (string, error) {
	if s.MappingFile != "" {
		m, err := LoadMapping(s.MappingFile)
		if err != nil {
			return "", err
		}
		if t, ok := m[s.Namespace]; ok {
			return t, nil
		}
		if s.RequireMapping {
			return "", &NotYetError{fmt.Sprintf("namespace %q is not in %s yet (berth-netd writes it from the cluster's Namespaces)", s.Namespace, s.MappingFile)}
		}
	}
	if !Valid(s.Namespace) {
		return "", fmt.Errorf("K8S_POD_NAMESPACE: %q is not a valid tenant name", s.Namespace)
	}
	return s.Namespace, nil
}

// LoadMapping reads the namespace -> tenant file. A missing file is an
// empty mapping: berth-netd may not have written it yet.
func LoadMapping(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tenancy.mappingFile: %w", err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("tenancy.mappingFile %s: %w", path, err)
	}
	for ns, t := range m {
		if !Valid(t) {
			return nil, fmt.Errorf("tenancy.mappingFile %s: namespace %q maps to invalid tenant %q", path, ns, t)
		}
	}
	return m, nil
}

// Registry persists tenant -> index. Indexes are handed out in order and
// never reused, so a tenant keeps its VNI and BPF identity for life.
type Registry struct{ Path string }

type registryFile struct {
	Tenants map[string]uint32 `json:"tenants"`
	Next    uint32            `json:"next"`
}

// Index returns name's index, allocating one on first use. Concurrent
// callers in several processes are serialised with flock, and the file is
// replaced atomically (write, fsync, rename, fsync dir).
func (r Registry) Index(name string) (uint32, error) {
	if !Valid(name) {
		return 0, fmt.Errorf("tenant %q is not a valid name", name)
	}
	var idx uint32
	err := r.locked(func(f *registryFile) (bool, error) {
		if i, ok := f.Tenants[name]; ok {
			idx = i
			return false, nil
		}
		if len(f.Tenants) == 0 && name != Default {
			// Index 0 is always the default tenant: its VNI (vniBase) and
			// the main routing table also carry the node's own traffic.
			f.Tenants[Default] = 0
			f.Next = 1
		}
		if f.Next >= MaxTenants {
			return false, fmt.Errorf("tenancy.registry: all %d tenant indexes are used", MaxTenants)
		}
		idx = f.Next
		f.Tenants[name] = idx
		f.Next++
		return true, nil
	})
	return idx, err
}

// Lookup returns name's index without assigning one (tenancy.registryMode
// "cluster"). It takes no lock: writers replace the file by an atomic
// rename, so a reader sees either the old or the new registry whole. A
// missing file is an empty registry.
func (r Registry) Lookup(name string) (uint32, bool, error) {
	f, err := r.read()
	if err != nil {
		return 0, false, err
	}
	i, ok := f.Tenants[name]
	return i, ok, nil
}

// Snapshot returns every registered tenant without taking the lock, for
// readers that must not wait behind ADDs (berth-netd): writers replace the
// file by an atomic rename, so it is read whole. A missing file is an
// empty registry.
func (r Registry) Snapshot() (map[string]uint32, error) {
	f, err := r.read()
	if err != nil {
		return nil, err
	}
	return f.Tenants, nil
}

// Conflict is a local registry entry that disagreed with the cluster's
// assignment when it was mirrored: the cluster wins.
type Conflict struct {
	Tenant string
	// Local is the index the tenant had in this node's registry.
	Local uint32
	// Cluster is the index the cluster gave it; with Dropped, the tenant
	// has none in the cluster and lost its local index to another tenant.
	Cluster uint32
	Dropped bool
}

// Mirror makes the registry agree with a cluster-wide assignment: every
// tenant of assign gets exactly its index, and a local tenant whose index
// the cluster gave to another tenant is removed (two names on one index
// would share a VNI and a BPF identity). Local tenants the assignment does
// not mention are kept: assignments only grow, so an older copy of the
// table (a late informer event) must not take back what a newer one
// mirrored. It reports the conflicts it resolved and whether it wrote.
func (r Registry) Mirror(assign map[string]uint32) ([]Conflict, bool, error) {
	names := make([]string, 0, len(assign))
	owner := make(map[uint32]string, len(assign))
	for n, i := range assign {
		if !Valid(n) {
			return nil, false, fmt.Errorf("tenant %q is not a valid name", n)
		}
		if i >= MaxTenants {
			return nil, false, fmt.Errorf("tenant %q: index %d is not below %d", n, i, MaxTenants)
		}
		if o, dup := owner[i]; dup {
			return nil, false, fmt.Errorf("tenants %q and %q both have index %d", o, n, i)
		}
		owner[i] = n
		names = append(names, n)
	}
	sort.Strings(names)
	var conflicts []Conflict
	changed := false
	err := r.locked(func(f *registryFile) (bool, error) {
		local := make([]string, 0, len(f.Tenants))
		for n := range f.Tenants {
			local = append(local, n)
		}
		sort.Strings(local)
		for _, n := range local {
			i := f.Tenants[n]
			if _, ok := assign[n]; ok {
				continue
			}
			if o, taken := owner[i]; taken && o != n {
				conflicts = append(conflicts, Conflict{Tenant: n, Local: i, Dropped: true})
				delete(f.Tenants, n)
				changed = true
			}
		}
		for _, n := range names {
			i := assign[n]
			old, ok := f.Tenants[n]
			if ok && old == i {
				continue
			}
			if ok {
				conflicts = append(conflicts, Conflict{Tenant: n, Local: old, Cluster: i})
			}
			f.Tenants[n] = i
			changed = true
		}
		for _, i := range f.Tenants {
			if i >= f.Next {
				f.Next = i + 1
				changed = true
			}
		}
		return changed, nil
	})
	if err != nil {
		return nil, false, err
	}
	return conflicts, changed, nil
}

// List returns every registered tenant.
func (r Registry) List() (map[string]uint32, error) {
	var out map[string]uint32
	err := r.locked(func(f *registryFile) (bool, error) {
		out = f.Tenants
		return false, nil
	})
	return out, err
}

// Names returns the registered tenants sorted by index.
func (r Registry) Names() ([]string, error) {
	m, err := r.List()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return m[names[i]] < m[names[j]] })
	return names, nil
}

func (r Registry) locked(fn func(*registryFile) (bool, error)) error {
	dir := filepath.Dir(r.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tenancy.registry: %w", err)
	}
	lock, err := os.OpenFile(r.Path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("tenancy.registry: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("tenancy.registry: lock: %w", err)
	}
	f, err := r.read()
	if err != nil {
		return err
	}
	changed, err := fn(f)
	if err != nil || !changed {
		return err
	}
	out, _ := json.MarshalIndent(f, "", "  ")
	return atomicfile.WriteBytes(r.Path, out, 0o600)
}

// read loads the registry file; a missing file is an empty registry.
func (r Registry) read() (*registryFile, error) {
	f := &registryFile{Tenants: map[string]uint32{}}
	raw, err := os.ReadFile(r.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return f, nil
	case err != nil:
		return nil, fmt.Errorf("tenancy.registry: %w", err)
	}
	if err := json.Unmarshal(raw, f); err != nil {
		return nil, fmt.Errorf("tenancy.registry %s is corrupt: %w", r.Path, err)
	}
	if f.Tenants == nil {
		f.Tenants = map[string]uint32{}
	}
	return f, nil
}
