package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		conf     string
		wantCode uint   // 0 = success
		wantMsg  string // substring of the message: the field's name
		check    func(t *testing.T, c *NetConf)
	}{
		{
			name: "macvlan defaults",
			conf: `{"cniVersion":"1.1.0","name":"n","type":"berth","ipam":{"subnet":"198.18.10.0/24"}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Mode != ModeMacvlan || c.MacvlanMode != "bridge" {
					t.Errorf("mode=%q macvlanMode=%q, want macvlan/bridge", c.Mode, c.MacvlanMode)
				}
				if !c.BuiltinIPAM() || c.IPAM.DataDir == "" {
					t.Errorf("builtin IPAM with default dataDir expected, got %+v", c.IPAM)
				}
			},
		},
		{
			name: "every macvlan mode",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"berth","mode":"macvlan","macvlanMode":"passthru","ipam":{"subnet":"198.18.10.0/24"}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.MacvlanMode != "passthru" {
					t.Errorf("macvlanMode=%q", c.MacvlanMode)
				}
			},
		},
		{
			name: "ipvlan defaults to l2",
			conf: `{"cniVersion":"0.4.0","name":"n","type":"berth","mode":"ipvlan","master":"eth0","ipam":{"subnet":"198.18.10.0/24"}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.IPvlanMode != "l2" {
					t.Errorf("ipvlanMode=%q", c.IPvlanMode)
				}
			},
		},
		{
			name: "vxlan defaults",
			conf: `{"cniVersion":"0.3.1","name":"n","type":"berth","mode":"vxlan","ipam":{"subnet":"198.18.64.0/24"}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.VNI != 1 || c.VXLANPort != 4789 {
					t.Errorf("vni=%d port=%d", c.VNI, c.VXLANPort)
				}
			},
		},
		{
			name: "delegated ipam is not validated here",
			conf: `{"cniVersion":"1.1.0","name":"n","type":"berth","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}]]}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.BuiltinIPAM() {
					t.Error("host-local must be delegated")
				}
			},
		},
		{name: "invalid json", conf: `{"cniVersion":`, wantCode: types.ErrDecodingFailure, wantMsg: "decode"},
		{name: "wrong field type", conf: `{"cniVersion":"1.1.0","name":"n","mtu":"big"}`, wantCode: types.ErrDecodingFailure},
		{name: "unsupported version", conf: `{"cniVersion":"0.2.0","name":"n","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrIncompatibleCNIVersion, wantMsg: "cniVersion"},
		{name: "future version", conf: `{"cniVersion":"9.0.0","name":"n","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrIncompatibleCNIVersion, wantMsg: "cniVersion"},
		{name: "missing name", conf: `{"cniVersion":"1.1.0","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "name"},
		{name: "unknown mode", conf: `{"cniVersion":"1.1.0","name":"n","mode":"bridge","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "mode: unknown mode \"bridge\""},
		{name: "unknown macvlan mode", conf: `{"cniVersion":"1.1.0","name":"n","macvlanMode":"x","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "macvlanMode"},
		{name: "unknown ipvlan mode", conf: `{"cniVersion":"1.1.0","name":"n","mode":"ipvlan","ipvlanMode":"l4","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "ipvlanMode"},
		{name: "bad master name", conf: `{"cniVersion":"1.1.0","name":"n","master":"../../etc","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "master"},
		{name: "mtu too small", conf: `{"cniVersion":"1.1.0","name":"n","mtu":20,"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "mtu"},
		{name: "vni out of range", conf: `{"cniVersion":"1.1.0","name":"n","mode":"vxlan","vni":16777216,"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "vni"},
		{name: "bad vxlan port", conf: `{"cniVersion":"1.1.0","name":"n","mode":"vxlan","vxlanPort":70000,"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "vxlanPort"},
		{name: "bad underlay ip", conf: `{"cniVersion":"1.1.0","name":"n","mode":"vxlan","underlayIP":"1.2.3","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "underlayIP"},
		{name: "vxlan needs builtin ipam", conf: `{"cniVersion":"1.1.0","name":"n","mode":"vxlan","ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "ipam.type"},
		{name: "missing ipam", conf: `{"cniVersion":"1.1.0","name":"n"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "ipam"},
		{name: "bad cidr", conf: `{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"198.18.10.0/33"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "ipam.subnet"},
		{name: "bad log level", conf: `{"cniVersion":"1.1.0","name":"n","logLevel":"loud","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "logLevel"},
		{name: "bandwidth rate too low", conf: `{"cniVersion":"1.1.0","name":"n","bandwidth":{"egressRate":100},"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "bandwidth.egressRate"},
		{name: "runtime bandwidth rate too high", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"bandwidth":{"ingressRate":2000000000000}},"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "runtimeConfig.bandwidth.ingressRate"},
		{name: "allow-list bad cidr", conf: `{"cniVersion":"1.1.0","name":"n","tenancy":{"allow":[{"cidr":"10.96.0.10"}]},"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "tenancy.allow[0].cidr"},
		{name: "allow-list bad protocol", conf: `{"cniVersion":"1.1.0","name":"n","tenancy":{"allow":[{"cidr":"10.96.0.10/32","ports":[{"protocol":"gre"}]}]},"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "tenancy.allow[0].ports[0].protocol"},
		{name: "vniBase leaves no room", conf: `{"cniVersion":"1.1.0","name":"n","mode":"vxlan","tenancy":{"vniBase":16777000},"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "tenancy.vniBase"},
		{name: "unknown registry mode", conf: `{"cniVersion":"1.1.0","name":"n","tenancy":{"registryMode":"global"},"ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "tenancy.registryMode"},
		{
			name: "cluster registry mode",
			conf: `{"cniVersion":"1.1.0","name":"n","tenancy":{"registryMode":"cluster"},"ipam":{"subnet":"198.18.10.0/24"}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Tenancy.RegistryMode != "cluster" {
					t.Errorf("registryMode = %q", c.Tenancy.RegistryMode)
				}
			},
		},
		{name: "unknown attach mode", conf: `{"cniVersion":"1.1.0","name":"n","attachMode":"xdp","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "attachMode"},
		{name: "pin dir outside bpffs", conf: `{"cniVersion":"1.1.0","name":"n","bpfPinDir":"/tmp/x","ipam":{"subnet":"198.18.10.0/24"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "bpfPinDir"},
		{
			name: "runtime bandwidth overrides the network default",
			conf: `{"cniVersion":"1.1.0","name":"n","bandwidth":{"egressRate":10000000},"runtimeConfig":{"bandwidth":{"egressRate":20000000}},"ipam":{"subnet":"198.18.10.0/24"}}`,
			check: func(t *testing.T, c *NetConf) {
				if bw := c.EffectiveBandwidth(); bw == nil || bw.EgressRate != 20e6 {
					t.Errorf("EffectiveBandwidth = %+v, want egress 20M", bw)
				}
				if !c.Tenancy.On() || c.Tenancy.VNIBase != 1 || c.BPFPinDir != DefaultBPFPinDir || c.Tenancy.RegistryMode != "local" {
					t.Errorf("dataplane defaults not filled: %+v %s", c.Tenancy, c.BPFPinDir)
				}
			},
		},
		{name: "bad prevResult", conf: `{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"198.18.10.0/24"},"prevResult":{"ips":"nope"}}`, wantCode: types.ErrDecodingFailure, wantMsg: "prevResult"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.conf))
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("want *types.Error code %d, got %v", tc.wantCode, err)
			}
			if te.Code != tc.wantCode {
				t.Errorf("code = %d (%s), want %d", te.Code, te.Msg, tc.wantCode)
			}
			if !strings.Contains(te.Msg, tc.wantMsg) {
				t.Errorf("message %q does not name %q", te.Msg, tc.wantMsg)
			}
		})
	}
}

// Every version the issue promises must be accepted.
func TestSupportedVersions(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		if !supported(v) {
			t.Errorf("version %s not supported", v)
		}
	}
}
