package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// notifyClient is the HTTP client Slack notifications go out through. A
// Slack URL comes from a pipeline secret that anyone with push access can
// set, so unless allowPrivate is set the client only speaks HTTPS, follows
// no redirects, and refuses to connect to loopback, private, link-local
// (cloud metadata), multicast or unspecified addresses — checked on the
// address actually dialled, so DNS tricks do not get around it.
func notifyClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if !allowPrivate {
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if !publicAddr(ap.Addr()) {
				return fmt.Errorf("notification to %s refused: not a public address (see --notify-allow-private)", ap.Addr())
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

// publicAddr reports whether a is a globally routable unicast address.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate() && !a.IsLoopback() &&
		!a.IsLinkLocalUnicast() && !cgnat.Contains(a)
}

// cgnat is the shared address space (RFC 6598), not reachable publicly.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")
