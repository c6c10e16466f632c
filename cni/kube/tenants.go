package kube

// Cluster-wide tenant indexes. A tenant's index decides its VNI
// (vniBase+index) and its BPF identity (index+1) on every node, and a
// receiving node reads the tenant of a packet from the VNI it came in on:
// if two nodes gave one tenant different indexes, a pod of one tenant would
// arrive on another node as a pod of another tenant. So in Kubernetes mode
// indexes are not assigned by each node's CNI plugin in first-seen order
// but once for the whole cluster, in a ConfigMap every berth-netd reads and
// any may append to, the way Cilium allocates identities in CRDs:
//
//   - data maps tenant name -> decimal index; "default" is always 0;
//   - entries are only ever added, and an index is never handed out twice:
//     the annotation berth.dev/next-tenant-index keeps the high-water mark,
//     so even an entry removed by hand does not free its index;
//   - writers Get, add what is missing and Update with the resourceVersion
//     they read; the API server refuses the Update (409 Conflict) if another
//     node wrote in between, and the writer starts again from a fresh Get.
//
// Each node mirrors the table into its registry file (tenant.Registry
// Mirror), which the CNI plugin reads in tenancy.registryMode "cluster".

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/berthdev/berth/cni/tenant"
)

// Where the cluster's tenant table lives by default.
const (
	DefaultTenantsNamespace = "berth-system"
	DefaultTenantsName      = "berth-tenants"
	// AnnotationNextIndex is the first index never handed out.
	AnnotationNextIndex = "berth.dev/next-tenant-index"
)

// Assignment is the cluster's tenant table as read from the ConfigMap.
type Assignment struct {
	Indexes map[string]uint32
	// Next is the first index never handed out: above every entry and at
	// least the recorded high-water mark.
	Next uint32
}

// ParseAssignment reads a tenant ConfigMap. Entries that cannot be used (an
// invalid tenant name or index, index 0 on another tenant than "default",
// an index claimed twice) are left out and reported; their indexes still
// count as handed out, so they are never given to a new tenant. Of two
// names on one index the one sorting first keeps it, as the overlay's
// registry reader does, so every node drops the same one.
func ParseAssignment(cm *corev1.ConfigMap) (Assignment, []Skip) {
	a := Assignment{Indexes: map[string]uint32{}, Next: 1}
	var skips []Skip
	if cm == nil {
		a.Indexes[tenant.Default] = 0
		return a, nil
	}
	if v, ok := cm.Annotations[AnnotationNextIndex]; ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			skips = append(skips, Skip{AnnotationNextIndex, fmt.Sprintf("annotation %q is not a number; using the highest entry", v)})
		} else if uint32(n) > a.Next {
			a.Next = uint32(n)
		}
	}
	names := make([]string, 0, len(cm.Data))
	for n := range cm.Data {
		names = append(names, n)
	}
	sort.Strings(names)
	owner := map[uint32]string{}
	for _, n := range names {
		v := cm.Data[n]
		i64, err := strconv.ParseUint(v, 10, 32)
		if err != nil || i64 >= tenant.MaxTenants {
			skips = append(skips, Skip{n, fmt.Sprintf("index %q is not a number below %d", v, tenant.MaxTenants)})
			continue
		}
		i := uint32(i64)
		if i >= a.Next {
			a.Next = i + 1
		}
		switch {
		case !tenant.Valid(n):
			skips = append(skips, Skip{n, "not a valid tenant name"})
		case (i == 0) != (n == tenant.Default):
			skips = append(skips, Skip{n, fmt.Sprintf("index 0 belongs to the %q tenant and only to it (has %d)", tenant.Default, i)})
		case owner[i] != "":
			skips = append(skips, Skip{n, fmt.Sprintf("index %d already belongs to %q", i, owner[i])})
		default:
			owner[i] = n
			a.Indexes[n] = i
		}
	}
	// The default tenant's index is fixed; it is in every table whether
	// or not the ConfigMap says so yet.
	a.Indexes[tenant.Default] = 0
	return a, skips
}

// TenantAllocator assigns tenant indexes in the cluster's ConfigMap.
type TenantAllocator struct {
	Client    kubernetes.Interface
	Namespace string // default DefaultTenantsNamespace
	Name      string // default DefaultTenantsName
	Logger    *slog.Logger
	// Backoff paces the retries after a Conflict (another node wrote
	// first); the zero value means 12 tries from 10 ms growing to about
	// 1 s, enough for every node of a large cluster to win once.
	Backoff wait.Backoff
}

func (a *TenantAllocator) ref() (string, string) {
	ns, name := a.Namespace, a.Name
	if ns == "" {
		ns = DefaultTenantsNamespace
	}
	if name == "" {
		name = DefaultTenantsName
	}
	return ns, name
}

// Ensure gives every tenant of want that has no index the next free ones,
// in name order, and returns the whole table. It writes nothing when every
// tenant already has an index. Invalid names are skipped (the namespace
// mapping never produces them).
//
// seed is used only when the ConfigMap does not exist: its entries are
// written first, so a table that was deleted is rebuilt from the node's
// mirror of it (the registry file) with the indexes running pods use,
// rather than renumbered from 1. On a cluster's first start it is that
// node's own registry; the other nodes then follow it.
func (a *TenantAllocator) Ensure(ctx context.Context, want []string, seed map[string]uint32) (map[string]uint32, error) {
	ns, name := a.ref()
	b := a.Backoff
	if b.Steps == 0 {
		b = wait.Backoff{Steps: 12, Duration: 10 * time.Millisecond, Factor: 1.5, Jitter: 0.5, Cap: time.Second}
	}
	var out map[string]uint32
	attempts := 0
	err := retry.OnError(b, func(err error) bool {
		// Another node wrote between our Get and our write: read again.
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		attempts++
		cms := a.Client.CoreV1().ConfigMaps(ns)
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		create := apierrors.IsNotFound(err)
		if err != nil && !create {
			return err
		}
		if create {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
				Labels: map[string]string{"app.kubernetes.io/part-of": "berth"}}}
			if len(seed) > 0 {
				// Validated like any table: what cannot be used is
				// left out, and its index stays reserved.
				raw := &corev1.ConfigMap{Data: map[string]string{}}
				for t, i := range seed {
					raw.Data[t] = strconv.FormatUint(uint64(i), 10)
				}
				from, _ := ParseAssignment(raw)
				cm.Data = map[string]string{}
				for t, i := range from.Indexes {
					cm.Data[t] = strconv.FormatUint(uint64(i), 10)
				}
				cm.Annotations = map[string]string{AnnotationNextIndex: strconv.FormatUint(uint64(from.Next), 10)}
				a.Logger.Info("creating the tenant table from this node's registry", "configmap", ns+"/"+name, "tenants", len(from.Indexes))
			}
		}
		asg, skips := ParseAssignment(cm)
		for _, s := range skips {
			a.Logger.Warn("tenant table entry ignored", "configmap", ns+"/"+name, "key", s.Name, "reason", s.Reason)
		}
		missing := map[string]bool{}
		if v, ok := cm.Data[tenant.Default]; !ok || v != "0" {
			// Written out so that the table reads completely to a person.
			missing[tenant.Default] = true
		}
		for _, t := range want {
			if _, ok := asg.Indexes[t]; !ok && tenant.Valid(t) {
				missing[t] = true
			}
		}
		if len(missing) == 0 && !create {
			out = asg.Indexes
			return nil
		}
		newNames := make([]string, 0, len(missing))
		for t := range missing {
			if t != tenant.Default {
				newNames = append(newNames, t)
			}
		}
		sort.Strings(newNames)
		if uint64(asg.Next)+uint64(len(newNames)) > tenant.MaxTenants {
			return fmt.Errorf("configmap %s/%s: %d new tenants do not fit: all %d tenant indexes are used or reserved (next is %d)", ns, name, len(newNames), tenant.MaxTenants, asg.Next)
		}
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		if cm.Annotations == nil {
			cm.Annotations = map[string]string{}
		}
		cm.Data[tenant.Default] = "0"
		added := map[string]uint32{}
		for _, t := range newNames {
			added[t] = asg.Next
			cm.Data[t] = strconv.FormatUint(uint64(asg.Next), 10)
			asg.Indexes[t] = asg.Next
			asg.Next++
		}
		cm.Annotations[AnnotationNextIndex] = strconv.FormatUint(uint64(asg.Next), 10)
		if create {
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		} else {
			// cm carries the resourceVersion of the Get: the API server
			// applies this Update only if nobody wrote since.
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if err != nil {
			if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
				a.Logger.Debug("tenant table changed under us; retrying", "configmap", ns+"/"+name, "attempt", attempts)
			}
			return err
		}
		if create {
			a.Logger.Info("created the cluster's tenant table", "configmap", ns+"/"+name, "tenants", len(cm.Data), "attempt", attempts)
		}
		for _, t := range newNames {
			a.Logger.Info("assigned cluster-wide tenant index", "tenant", t, "index", added[t], "configmap", ns+"/"+name, "attempt", attempts)
		}
		out = asg.Indexes
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tenant table %s/%s (after %d attempts): %w", ns, name, attempts, err)
	}
	return out, nil
}
