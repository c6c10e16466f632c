package plugin

import (
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

// invokeIPAM runs a delegated IPAM plugin with the same environment the
// runtime gave us (CNI_PATH lookup, CNI_COMMAND overridden to verb).
func invokeIPAM(plugin, verb string, stdin []byte) (types.Result, error) {
	switch verb {
	case "ADD":
		return invoke.DelegateAdd(bgctx, plugin, stdin, nil)
	case "CHECK":
		return nil, invoke.DelegateCheck(bgctx, plugin, stdin, nil)
	case "DEL":
		return nil, invoke.DelegateDel(bgctx, plugin, stdin, nil)
	case "STATUS":
		return nil, invoke.DelegateStatus(bgctx, plugin, stdin, nil)
	case "GC":
		return nil, invoke.DelegateGC(bgctx, plugin, stdin, nil)
	}
	return nil, types.NewError(types.ErrInternal, "unknown IPAM verb "+verb, "")
}
