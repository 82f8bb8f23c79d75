package notify

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Client is the HTTP client Slack notifications go out through. A
// Slack URL comes from a pipeline secret that anyone with push access can
// set, so unless allowPrivate is set the client only speaks HTTPS, follows
// no redirects, and refuses to connect to any special-purpose address
// (loopback, private, link-local and cloud metadata, documentation,
// benchmarking, multicast... see specialPurpose) — checked on the address
// actually dialled, so DNS tricks do not get around it.
func Client(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if !allowPrivate {
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if sp, special := specialRange(ap.Addr()); special {
				return fmt.Errorf("notification to %s refused: not a public address: in %s (see --notify-allow-private)", ap.Addr(), sp)
			}
			return nil
		}
	}
	tr := &http.Transport{
		// No proxy: through one, the address check would see the proxy,
		// not the destination.
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        10,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: httpsOnly{tr, allowPrivate},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("notification redirects are not followed")
		},
	}
}

// httpsOnly refuses plain-HTTP requests unless allowed.
type httpsOnly struct {
	next  http.RoundTripper
	plain bool
}

func (h httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && !h.plain {
		return nil, fmt.Errorf("notification to a %s URL refused: use https (see --notify-allow-private)", r.URL.Scheme)
	}
	return h.next.RoundTrip(r)
}

// publicAddr reports whether a is a globally routable unicast address: in
// none of the special-purpose ranges below.
func publicAddr(a netip.Addr) bool {
	_, special := specialRange(a)
	return a.IsValid() && !special
}

// specialRange returns the special-purpose range a is in. An IPv4-mapped
// IPv6 address is checked as the IPv4 address it maps; a NAT64 address of
// the well-known prefix (64:ff9b::/96, RFC 6052) as the IPv4 address it
// embeds, so that IPv6-only hosts behind NAT64 still reach public servers
// but not private ones. Zoned addresses and IPv6 outside the global
// unicast space 2000::/3 are refused too.
func specialRange(a netip.Addr) (specialPrefix, bool) {
	a = a.Unmap()
	if a.Zone() != "" {
		return specialPrefix{Name: "a zoned address"}, true
	}
	if nat64.Contains(a) {
		b := a.As16()
		v4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		if sp, ok := specialRange(v4); ok {
			return specialPrefix{netip.PrefixFrom(nat64.Addr(), nat64.Bits()), "IPv4-IPv6 Translation of " + sp.String()}, true
		}
		return specialPrefix{}, false
	}
	for _, sp := range specialPurpose {
		if sp.Contains(a) {
			return sp, true
		}
	}
	if a.Is6() && !globalUnicast6.Contains(a) {
		return specialPrefix{globalUnicast6, "outside the IPv6 global unicast space"}, true
	}
	return specialPrefix{}, false
}

// specialPrefix is a registry range and its name.
type specialPrefix struct {
	netip.Prefix
	Name string
}

func (s specialPrefix) String() string {
	if !s.IsValid() {
		return s.Name
	}
	return s.Prefix.String() + " (" + s.Name + ")"
}

// specialPurpose are the ranges notifications never go to (unless
// --notify-allow-private): the IANA IPv4 and IPv6 Special-Purpose Address
// Registries (names as there; globally reachable entries such as AS112 and
// AMT included, no webhook lives in them), IPv4 multicast and the
// deprecated IPv6 site-local space.
var specialPurpose = func() []specialPrefix {
	var out []specialPrefix
	for _, r := range [][2]string{
		// IPv4 Special-Purpose Address Registry.
		{"0.0.0.0/8", "This network"},
		{"10.0.0.0/8", "Private-Use"},
		{"100.64.0.0/10", "Shared Address Space"},
		{"127.0.0.0/8", "Loopback"},
		{"169.254.0.0/16", "Link Local"},
		{"172.16.0.0/12", "Private-Use"},
		{"192.0.0.0/24", "IETF Protocol Assignments"},
		{"192.0.2.0/24", "Documentation (TEST-NET-1)"},
		{"192.31.196.0/24", "AS112-v4"},
		{"192.52.193.0/24", "AMT"},
		{"192.88.99.0/24", "Deprecated (6to4 Relay Anycast)"},
		{"192.168.0.0/16", "Private-Use"},
		{"192.175.48.0/24", "Direct Delegation AS112 Service"},
		{"198.18.0.0/15", "Benchmarking"},
		{"198.51.100.0/24", "Documentation (TEST-NET-2)"},
		{"203.0.113.0/24", "Documentation (TEST-NET-3)"},
		{"255.255.255.255/32", "Limited Broadcast"}, // before 240.0.0.0/4, which holds it
		{"240.0.0.0/4", "Reserved"},
		// IPv4 Multicast Address Space Registry.
		{"224.0.0.0/4", "Multicast"},
		// IPv6 Special-Purpose Address Registry.
		{"::1/128", "Loopback Address"},
		{"::/128", "Unspecified Address"},
		{"::ffff:0:0/96", "IPv4-mapped Address"},
		{"64:ff9b:1::/48", "IPv4-IPv6 Translat. (local use)"},
		{"100::/64", "Discard-Only Address Block"},
		{"100:0:0:1::/64", "Dummy IPv6 Prefix"},
		{"2001::/23", "IETF Protocol Assignments"},
		{"2001:db8::/32", "Documentation"},
		{"2002::/16", "6to4"},
		{"2620:4f:8000::/48", "Direct Delegation AS112 Service"},
		{"3fff::/20", "Documentation"},
		{"5f00::/16", "Segment Routing (SRv6) SIDs"},
		{"fc00::/7", "Unique-Local"},
		{"fe80::/10", "Link-Local Unicast"},
		// Deprecated site-local (RFC 3879) and multicast.
		{"fec0::/10", "Site-Local (deprecated)"},
		{"ff00::/8", "Multicast"},
	} {
		out = append(out, specialPrefix{netip.MustParsePrefix(r[0]), r[1]})
	}
	return out
}()

var (
	// nat64 is the well-known NAT64 prefix (IANA: IPv4-IPv6 Translat.).
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	// globalUnicast6 is the only IPv6 space IANA allocates for global
	// unicast; the rest is reserved or special.
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
)
