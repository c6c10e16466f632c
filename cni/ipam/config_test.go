package ipam

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func mustRoute(t *testing.T, dst, gw string) *types.Route {
	t.Helper()
	_, n, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatal(err)
	}
	r := &types.Route{Dst: *n}
	if gw != "" {
		r.GW = net.ParseIP(gw)
	}
	return r
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		// wantField is the JSON path the error must start with; empty
		// means the config is valid.
		wantField string
		wantGW    string // expected Gateway after defaults, when valid
		wantDir   string
	}{
		{name: "minimal v4", cfg: Config{Subnet: "198.18.10.0/24"}, wantGW: "198.18.10.1", wantDir: DefaultDataDir},
		{name: "type berth", cfg: Config{Type: "berth", Subnet: "198.18.10.0/24"}, wantGW: "198.18.10.1", wantDir: DefaultDataDir},
		{name: "minimal v6", cfg: Config{Subnet: "fd00:10::/64"}, wantGW: "fd00:10::1", wantDir: DefaultDataDir},
		{name: "host bits tolerated", cfg: Config{Subnet: "10.0.0.77/24"}, wantGW: "10.0.0.1", wantDir: DefaultDataDir},
		{name: "explicit gateway and dir", cfg: Config{Subnet: "10.0.0.0/24", Gateway: "10.0.0.254", DataDir: "/tmp/x"}, wantGW: "10.0.0.254", wantDir: "/tmp/x"},
		{name: "range", cfg: Config{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.10", RangeEnd: "10.0.0.20"}, wantGW: "10.0.0.1", wantDir: DefaultDataDir},
		{name: "range start at network address is clipped", cfg: Config{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.0"}, wantGW: "10.0.0.1", wantDir: DefaultDataDir},
		{name: "ranges list", cfg: Config{Subnet: "10.0.0.0/24", Ranges: []Range{{"10.0.0.10", "10.0.0.20"}, {"10.0.0.15", "10.0.0.30"}}}, wantGW: "10.0.0.1", wantDir: DefaultDataDir},
		{name: "reserved ip and cidr", cfg: Config{Subnet: "10.0.0.0/24", Reserved: []string{"10.0.0.5", "10.0.0.128/25", "10.9.0.0/16"}}, wantGW: "10.0.0.1", wantDir: DefaultDataDir},
		{name: "routes", cfg: Config{Subnet: "10.0.0.0/24", Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}}}, wantGW: "10.0.0.1", wantDir: DefaultDataDir},
		{name: "smallest v4", cfg: Config{Subnet: "10.0.0.0/30"}, wantGW: "10.0.0.1", wantDir: DefaultDataDir},

		{name: "bad type", cfg: Config{Type: "host-local", Subnet: "10.0.0.0/24"}, wantField: "ipam.type"},
		{name: "missing subnet", cfg: Config{}, wantField: "ipam.subnet"},
		{name: "bad CIDR", cfg: Config{Subnet: "10.0.0.0/33"}, wantField: "ipam.subnet"},
		{name: "garbage CIDR", cfg: Config{Subnet: "banana"}, wantField: "ipam.subnet"},
		{name: "subnet too small v4", cfg: Config{Subnet: "10.0.0.0/31"}, wantField: "ipam.subnet"},
		{name: "subnet too small v6", cfg: Config{Subnet: "fd00::/127"}, wantField: "ipam.subnet"},
		{name: "4in6 subnet", cfg: Config{Subnet: "::ffff:10.0.0.0/120"}, wantField: "ipam.subnet"},
		{name: "rangeStart outside", cfg: Config{Subnet: "10.0.0.0/24", RangeStart: "10.1.0.5"}, wantField: "ipam.rangeStart"},
		{name: "rangeEnd outside", cfg: Config{Subnet: "10.0.0.0/24", RangeEnd: "10.0.1.0"}, wantField: "ipam.rangeEnd"},
		{name: "rangeStart garbage", cfg: Config{Subnet: "10.0.0.0/24", RangeStart: "10.0.0"}, wantField: "ipam.rangeStart"},
		{name: "rangeEnd before rangeStart", cfg: Config{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.9", RangeEnd: "10.0.0.3"}, wantField: "ipam.rangeEnd"},
		{name: "rangeStart wrong family", cfg: Config{Subnet: "10.0.0.0/24", RangeStart: "fd00::1"}, wantField: "ipam.rangeStart"},
		{name: "ranges[1] end before start", cfg: Config{Subnet: "10.0.0.0/24", Ranges: []Range{{"10.0.0.2", "10.0.0.3"}, {"10.0.0.9", "10.0.0.3"}}}, wantField: "ipam.ranges[1].rangeEnd"},
		{name: "ranges[0] start wrong family", cfg: Config{Subnet: "fd00::/64", Ranges: []Range{{"10.0.0.2", "fd00::9"}}}, wantField: "ipam.ranges[0].rangeStart"},
		{name: "ranges[0] end outside", cfg: Config{Subnet: "fd00::/64", Ranges: []Range{{"fd00::2", "fd01::9"}}}, wantField: "ipam.ranges[0].rangeEnd"},
		{name: "gateway garbage", cfg: Config{Subnet: "10.0.0.0/24", Gateway: "x"}, wantField: "ipam.gateway"},
		{name: "gateway outside", cfg: Config{Subnet: "10.0.0.0/24", Gateway: "10.0.1.1"}, wantField: "ipam.gateway"},
		{name: "gateway wrong family", cfg: Config{Subnet: "10.0.0.0/24", Gateway: "fd00::1"}, wantField: "ipam.gateway"},
		{name: "gateway network address", cfg: Config{Subnet: "10.0.0.0/24", Gateway: "10.0.0.0"}, wantField: "ipam.gateway"},
		{name: "gateway broadcast", cfg: Config{Subnet: "10.0.0.0/24", Gateway: "10.0.0.255"}, wantField: "ipam.gateway"},
		{name: "gateway with zone", cfg: Config{Subnet: "fd00::/64", Gateway: "fd00::1%eth0"}, wantField: "ipam.gateway"},
		{name: "reserved garbage", cfg: Config{Subnet: "10.0.0.0/24", Reserved: []string{"10.0.0.5", "10.0.0.6", "nope"}}, wantField: "ipam.reserved[2]"},
		{name: "reserved bad cidr", cfg: Config{Subnet: "10.0.0.0/24", Reserved: []string{"10.0.0.0/40"}}, wantField: "ipam.reserved[0]"},
		{name: "reserved wrong family", cfg: Config{Subnet: "10.0.0.0/24", Reserved: []string{"fd00::/64"}}, wantField: "ipam.reserved[0]"},
		{name: "everything reserved", cfg: Config{Subnet: "10.0.0.0/29", Reserved: []string{"10.0.0.0/29"}}, wantField: "ipam.subnet 10.0.0.0/29"},
		{name: "range is only the gateway", cfg: Config{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.1", RangeEnd: "10.0.0.1"}, wantField: "ipam.subnet 10.0.0.0/24 ranges"},
		{name: "null route", cfg: Config{Subnet: "10.0.0.0/24", Routes: []*types.Route{nil}}, wantField: "ipam.routes[0]"},
		{name: "route wrong family", cfg: Config{Subnet: "10.0.0.0/24", Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}}}, wantField: "ipam.routes[0].dst"},
		{name: "relative dataDir", cfg: Config{Subnet: "10.0.0.0/24", DataDir: "var/lib"}, wantField: "ipam.dataDir"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.Validate()
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if cfg.Gateway != tc.wantGW {
					t.Errorf("Gateway = %q, want %q", cfg.Gateway, tc.wantGW)
				}
				if cfg.DataDir != tc.wantDir {
					t.Errorf("DataDir = %q, want %q", cfg.DataDir, tc.wantDir)
				}
				// Validate must be idempotent: the filled-in config is
				// valid and unchanged by a second pass.
				again := cfg
				if err := again.Validate(); err != nil || again.Gateway != cfg.Gateway || again.DataDir != cfg.DataDir {
					t.Errorf("second Validate() = %v, %+v; want nil and unchanged", err, again)
				}
				return
			}
			assertInvalid(t, err, tc.wantField)
		})
	}
}

func assertInvalid(t *testing.T, err error, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want one naming %q", field)
	}
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *types.Error", err, err)
	}
	if te.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("code = %d, want %d", te.Code, types.ErrInvalidNetworkConfig)
	}
	if !strings.HasPrefix(te.Msg, field) {
		t.Errorf("message %q does not start with %q", te.Msg, field)
	}
}

func TestConfigMessages(t *testing.T) {
	// The exact wording of the commonest mistakes is part of the UX.
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Subnet: "10.0.0.0/33"}, `ipam.subnet: invalid CIDR "10.0.0.0/33"`},
		{Config{Subnet: "10.0.0.0/24", RangeStart: "10.1.0.5"}, `ipam.rangeStart: 10.1.0.5 is outside ipam.subnet 10.0.0.0/24`},
		{Config{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.9", RangeEnd: "10.0.0.3"}, `ipam.rangeEnd: 10.0.0.3 is before ipam.rangeStart 10.0.0.9`},
	} {
		err := tc.cfg.Validate()
		if err == nil || err.Error() != tc.want {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	// The plugin decodes the config from the runtime's JSON; make sure the
	// tags line up with the documented field names.
	const in = `{"type":"berth","subnet":"198.18.10.0/24","rangeStart":"198.18.10.10",
		"ranges":[{"rangeStart":"198.18.10.100","rangeEnd":"198.18.10.110"}],
		"routes":[{"dst":"0.0.0.0/0"}],"reserved":["198.18.10.50"],"dataDir":"/run/x"}`
	var c Config
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := c.parse()
	if err != nil {
		t.Fatal(err)
	}
	// .10-.254 (245 addresses; ranges[0] lies inside it) minus reserved .50.
	if got := p.size.Int64(); got != 244 {
		t.Errorf("pool size = %d, want 244", got)
	}
	if len(c.Routes) != 1 || c.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Errorf("routes = %v", c.Routes)
	}
}

func TestPoolSpans(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // "lo-hi"
	}{
		{"v4 /29", Config{Subnet: "10.0.0.0/29"}, []string{"10.0.0.2-10.0.0.6"}},
		{"v6 /125 has no broadcast", Config{Subnet: "fd00::/125"}, []string{"fd00::2-fd00::7"}},
		{"gateway in middle", Config{Subnet: "10.0.0.0/29", Gateway: "10.0.0.4"}, []string{"10.0.0.1-10.0.0.3", "10.0.0.5-10.0.0.6"}},
		{"reserved cidr", Config{Subnet: "10.0.0.0/28", Reserved: []string{"10.0.0.4/30", "10.0.0.14"}}, []string{"10.0.0.2-10.0.0.3", "10.0.0.8-10.0.0.13"}},
		{"ranges merged and clipped", Config{Subnet: "10.0.0.0/28", RangeStart: "10.0.0.0", RangeEnd: "10.0.0.3", Ranges: []Range{{"10.0.0.4", "10.0.0.5"}, {"10.0.0.12", "10.0.0.15"}}}, []string{"10.0.0.2-10.0.0.5", "10.0.0.12-10.0.0.14"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.cfg.parse()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range p.spans {
				got = append(got, s.lo.String()+"-"+s.hi.String())
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("spans = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24":    "10.0.0.255",
		"10.0.0.0/29":    "10.0.0.7",
		"10.0.0.0/8":     "10.255.255.255",
		"10.0.0.5/32":    "10.0.0.5",
		"fd00::/64":      "fd00::ffff:ffff:ffff:ffff",
		"fd00::/125":     "fd00::7",
		"0.0.0.0/0":      "255.255.255.255",
		"fd00:1::/20":    "fd00:fff:ffff:ffff:ffff:ffff:ffff:ffff",
		"192.168.1.0/23": "192.168.1.255",
	} {
		if got := lastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}
