package driver

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Registrar does node-driver-registrar's job: kubelet's plugin watcher
// finds <dir>/<driver>-reg.sock, asks GetInfo for the CSI endpoint, and
// reports the outcome through NotifyRegistrationStatus.
type Registrar struct {
	registerapi.UnimplementedRegistrationServer
	d          *Driver
	endpoint   string // the CSI socket as kubelet sees it
	registered atomic.Bool
}

// Registered reports whether kubelet accepted the plugin.
func (r *Registrar) Registered() bool { return r.registered.Load() }

// Register serves the registration socket in kubelet's plugins_registry
// directory. csiEndpoint is the path of the CSI socket on the host.
func (d *Driver) Register(dir, csiEndpoint string) (*Registrar, *grpc.Server, error) {
	sock := filepath.Join(dir, d.cfg.DriverName+"-reg.sock")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, err
	}
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, nil, err
	}
	r := &Registrar{d: d, endpoint: csiEndpoint}
	g := grpc.NewServer()
	registerapi.RegisterRegistrationServer(g, r)
	go g.Serve(l)
	d.log.Info("serving kubelet plugin registration", "socket", sock, "csiEndpoint", csiEndpoint)
	return r, g, nil
}

func (r *Registrar) GetInfo(ctx context.Context, req *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.d.cfg.DriverName,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *Registrar) NotifyRegistrationStatus(ctx context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	r.registered.Store(s.GetPluginRegistered())
	if s.GetPluginRegistered() {
		r.d.log.Info("kubelet registered the plugin", "driver", r.d.cfg.DriverName)
	} else {
		r.d.log.Error("kubelet refused the plugin", "driver", r.d.cfg.DriverName, "error", s.GetError())
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
