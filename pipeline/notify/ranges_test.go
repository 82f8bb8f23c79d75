package notify

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestNotifyRefusesEverySpecialPurposeRange(t *testing.T) {
	// One address inside each range of the IANA IPv4 and IPv6
	// Special-Purpose Address Registries (plus multicast and site-local),
	// and the prefix it must be reported in.
	tests := []struct{ addr, in string }{
		{"0.1.2.3", "0.0.0.0/8"},
		{"0.0.0.0", "0.0.0.0/8"},
		{"10.200.0.1", "10.0.0.0/8"},
		{"100.127.255.254", "100.64.0.0/10"},
		{"127.0.0.53", "127.0.0.0/8"},
		{"169.254.169.254", "169.254.0.0/16"},
		{"172.31.255.1", "172.16.0.0/12"},
		{"192.0.0.9", "192.0.0.0/24"},
		{"192.0.2.10", "192.0.2.0/24"},
		{"192.31.196.1", "192.31.196.0/24"},
		{"192.52.193.1", "192.52.193.0/24"},
		{"192.88.99.1", "192.88.99.0/24"},
		{"192.168.1.1", "192.168.0.0/16"},
		{"192.175.48.1", "192.175.48.0/24"},
		{"198.19.255.1", "198.18.0.0/15"},
		{"198.51.100.7", "198.51.100.0/24"},
		{"203.0.113.7", "203.0.113.0/24"},
		{"240.0.0.1", "240.0.0.0/4"},
		{"255.255.255.254", "240.0.0.0/4"},
		{"255.255.255.255", "255.255.255.255/32"},
		{"224.0.0.251", "224.0.0.0/4"},
		{"239.255.255.250", "224.0.0.0/4"},
		{"::1", "::1/128"},
		{"::", "::/128"},
		{"::ffff:127.0.0.1", "127.0.0.0/8"},          // mapped: checked as IPv4
		{"::ffff:169.254.169.254", "169.254.0.0/16"}, // mapped: checked as IPv4
		{"::ffff:0:1", "0.0.0.0/8"},
		{"64:ff9b::a00:1", "64:ff9b::/96"},    // NAT64 of 10.0.0.1
		{"64:ff9b::7f00:1", "64:ff9b::/96"},   // NAT64 of 127.0.0.1
		{"64:ff9b::c000:201", "64:ff9b::/96"}, // NAT64 of 192.0.2.1
		{"64:ff9b:1::1", "64:ff9b:1::/48"},
		{"100::1", "100::/64"},
		{"100:0:0:1::1", "100:0:0:1::/64"},
		{"2001::1", "2001::/23"},
		{"2001:2::1", "2001::/23"},
		{"2001:1ff:ffff::1", "2001::/23"},
		{"2001:db8::1", "2001:db8::/32"},
		{"2002:a00:1::1", "2002::/16"},
		{"2620:4f:8000::1", "2620:4f:8000::/48"},
		{"3fff::1", "3fff::/20"},
		{"5f00::1", "5f00::/16"},
		{"fc00::1", "fc00::/7"},
		{"fd12:3456::1", "fc00::/7"},
		{"fe80::1", "fe80::/10"},
		{"febf::1", "fe80::/10"},
		{"fec0::1", "fec0::/10"},
		{"ff02::1", "ff00::/8"},
		{"::a00:1", "2000::/3"},   // IPv4-compatible (deprecated): not global unicast
		{"4000::1", "2000::/3"},   // unallocated IPv6 space
		{"fe80::1%eth0", "zoned"}, // a zone names a local link
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.addr)
		sp, special := specialRange(a)
		if !special || !strings.Contains(sp.String(), tc.in) {
			t.Errorf("%s: special %v in %q, want refused in %s", tc.addr, special, sp, tc.in)
		}
		if publicAddr(a) {
			t.Errorf("publicAddr(%s) = true", tc.addr)
		}
	}
	for _, a := range []string{
		"8.8.8.8", "1.1.1.1", "52.1.2.3", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.1",
		"192.0.1.255", "192.0.3.1", "192.169.0.1", "198.17.255.255", "198.20.0.1", "223.255.255.254",
		"2606:4700::1111", "2a00:1450:4001::1", "2001:200::1", "2001:4860:4860::8888", "2003::1",
		"::ffff:8.8.8.8", "64:ff9b::808:808", // NAT64 of a public IPv4 address
	} {
		if sp, special := specialRange(netip.MustParseAddr(a)); special || !publicAddr(netip.MustParseAddr(a)) {
			t.Errorf("public %s refused as %s", a, sp)
		}
	}
	if publicAddr(netip.Addr{}) {
		t.Error("the zero Addr counted as public")
	}
}

func TestNotifyDialRefusalNamesTheRange(t *testing.T) {
	c := Client(false)
	c.Timeout = 30 * time.Second
	for addr, want := range map[string]string{
		"198.18.0.1":       "198.18.0.0/15 (Benchmarking)",
		"[fec0::1]":        "fec0::/10",
		"240.0.0.1":        "240.0.0.0/4 (Reserved)",
		"[64:ff9b::a00:1]": "IPv4-IPv6 Translation of 10.0.0.0/8 (Private-Use)",
	} {
		_, err := c.Post("https://"+addr+":9/hook", "application/json", strings.NewReader("{}"))
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--notify-allow-private") {
			t.Errorf("%s: %v, want a refusal naming %s", addr, err, want)
		}
	}
}
