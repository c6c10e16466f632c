// Command berth is the berth CNI plugin. Runtimes execute it as
// /opt/cni/bin/berth with the CNI_* environment and the network
// configuration on stdin; see docs/cni-config.md.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/berthdev/berth/cni/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.Funcs(), plugin.Versions(), plugin.About)
}
