package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containerd/containerd/v2/pkg/seccomp"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	apitypes "github.com/containerd/containerd/api/types"
)

// Version identifies berth-cri. main sets it from -X main.version; the
// Version RPC reports RuntimeVersion(), which is Version when that parses.
var Version = "dev"

const runtimeName = "berth-cri"

// Version answers kubelet. Version is the CRI's own "kubelet API version"
// field, which containerd also fills with 0.1.0.
func (s *Service) Version(ctx context.Context, r *runtime.VersionRequest) (*runtime.VersionResponse, error) {
	return &runtime.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       runtimeName,
		RuntimeVersion:    RuntimeVersion(),
		RuntimeApiVersion: "v1",
	}, nil
}

// Status reports RuntimeReady (containerd serving) and NetworkReady (a CNI
// config is loaded and its plugins answer STATUS).
func (s *Service) Status(ctx context.Context, r *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	rtCond := &runtime.RuntimeCondition{Type: runtime.RuntimeReady, Status: true}
	if ok, err := s.client.IsServing(s.nsCtx(ctx)); !ok {
		rtCond.Status = false
		rtCond.Reason = "ContainerdNotServing"
		rtCond.Message = "containerd at " + s.cfg.ContainerdAddress + " is not serving"
		if err != nil {
			rtCond.Message += ": " + err.Error()
		}
	}
	netCond := s.cni.networkReady(ctx)
	handlerFeatures := &runtime.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: s.rt.RROSupported, UserNamespaces: s.usernsSupported}
	resp := &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{rtCond, netCond}},
		RuntimeHandlers: []*runtime.RuntimeHandler{
			{Name: "", Features: handlerFeatures},
			{Name: "runc", Features: handlerFeatures},
		},
		Features: &runtime.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	if r.GetVerbose() {
		b, _ := json.Marshal(map[string]any{"config": s.cfg, "cniConfig": s.cni.cniConfFile(), "podCIDR": s.currentPodCIDR()})
		resp.Info = map[string]string{"config": string(b)}
	}
	return resp, nil
}

// RuntimeConfig tells kubelet which cgroup driver the runtime uses.
func (s *Service) RuntimeConfig(ctx context.Context, r *runtime.RuntimeConfigRequest) (*runtime.RuntimeConfigResponse, error) {
	d := runtime.CgroupDriver_CGROUPFS
	if s.cfg.CgroupDriver == "systemd" {
		d = runtime.CgroupDriver_SYSTEMD
	}
	return &runtime.RuntimeConfigResponse{Linux: &runtime.LinuxRuntimeConfiguration{CgroupDriver: d}}, nil
}

// UpdateRuntimeConfig records the pod CIDR kubelet learned from the Node.
// berth-cni allocates from its own configured ranges, so the CIDR is kept
// for Status and logs only.
func (s *Service) UpdateRuntimeConfig(ctx context.Context, r *runtime.UpdateRuntimeConfigRequest) (*runtime.UpdateRuntimeConfigResponse, error) {
	cidr := r.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	s.netMu.Lock()
	changed := cidr != s.podCIDR
	s.podCIDR = cidr
	s.netMu.Unlock()
	if changed && cidr != "" {
		s.log.Info("pod CIDR updated", "podCIDR", cidr)
	}
	return &runtime.UpdateRuntimeConfigResponse{}, nil
}

func (s *Service) currentPodCIDR() string {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	return s.podCIDR
}

func seccompEnabled() bool { return seccomp.IsEnabled() }

// probeFeatures asks the runc shim for runc's features. Recursive
// read-only mounts need runc's "rro" mount option and a kernel with
// mount_setattr (5.12+); pod user namespaces need runc's user namespace and
// idmapped-mount support.
func (s *Service) probeFeatures(ctx context.Context) (rro, userns bool) {
	opts, err := typeurl.MarshalAnyToProto(s.runcOptions())
	if err != nil {
		return false, false
	}
	req := &apitypes.RuntimeRequest{RuntimePath: "io.containerd.runc.v2", Options: opts}
	resp, err := s.client.IntrospectionService().PluginInfo(ctx, "io.containerd.runtime.v2", "task", req)
	if err != nil || resp.Extra == nil {
		s.log.Warn("cannot read runc features; recursive read-only mounts and user namespaces disabled", "err", err)
		return false, false
	}
	var info apitypes.RuntimeInfo
	if err := typeurl.UnmarshalTo(resp.Extra, &info); err != nil || info.Features == nil {
		return false, false
	}
	v, err := typeurl.UnmarshalAny(info.Features)
	if err != nil {
		return false, false
	}
	f, ok := v.(*features.Features)
	if !ok {
		return false, false
	}
	rro = kernelAtLeast(5, 12) && slices.Contains(f.MountOptions, "rro")
	if l := f.Linux; l != nil && slices.Contains(l.Namespaces, "user") {
		if m := l.MountExtensions; m != nil && m.IDMap != nil && m.IDMap.Enabled != nil && *m.IDMap.Enabled {
			userns = true
		}
	}
	return rro, userns
}

func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	var a, b int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &a, &b); err != nil {
		return false
	}
	return a > major || (a == major && b >= minor)
}

func unimplemented(msg string) error { return status.Error(codes.Unimplemented, msg) }
