package api

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies parses a comma-separated list of CIDR prefixes
// ("10.0.0.0/8, fd00::/8"); a bare address counts as a single host (/32 or
// /128). Empty gives none. An IPv4-mapped IPv6 prefix is refused (write the
// IPv4 form), as is a prefix with host bits set, which is usually a typo.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, fmt.Errorf("%q is not a CIDR prefix (e.g. 10.0.0.0/8 or fd00::/8)", f)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("%q has host bits set; did you mean %s?", f, p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not a CIDR prefix (e.g. 10.0.0.0/8 or fd00::/8)", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q is an IPv4-mapped prefix; give it in IPv4 form", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// ClientAddr is the address of the client that made r. Without trusted
// proxies, or when the TCP peer is not one of them, it is the TCP peer:
// an X-Forwarded-For header anyone can send is ignored. When the peer is a
// trusted proxy, X-Forwarded-For (all such headers, in order) is walked from
// the right, the end the proxies appended to, and the first entry that is
// not itself a trusted proxy is the client. An entry that is not an address
// (optionally with a port) stops the walk at the last trusted hop: nothing
// left of it can be believed. ok is false when RemoteAddr holds no address
// (then addr is invalid).
func ClientAddr(r *http.Request, trusted []netip.Prefix) (addr netip.Addr, ok bool) {
	addr = peerAddr(r.RemoteAddr)
	if !addr.IsValid() || !isTrusted(addr, trusted) {
		return addr, addr.IsValid()
	}
	var chain []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		chain = append(chain, strings.Split(h, ",")...)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		a, good := hopAddr(chain[i])
		if !good {
			break
		}
		addr = a
		if !isTrusted(addr, trusted) {
			break
		}
	}
	return addr, true
}

// hopAddr parses one X-Forwarded-For entry: an address, or an address with
// a port ("192.0.2.1:5678", "[2001:db8::1]:5678") as some proxies write.
func hopAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
