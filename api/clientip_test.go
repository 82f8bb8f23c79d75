package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/kontinuous/kontinuous/auth"
)

func TestClientAddrBelievesForwardedForOnlyThroughTrustedProxies(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8, 192.168.5.0/24, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, remote string
		xff          []string // one X-Forwarded-For header per element
		trusted      []netip.Prefix
		want         string // "" = no address
	}{
		{"no setting: the TCP peer", "203.0.113.7:1", []string{"192.0.2.1"}, nil, "203.0.113.7"},
		{"spoofed XFF from an untrusted peer ignored", "203.0.113.7:1", []string{"192.0.2.1"}, proxies, "203.0.113.7"},
		{"spoofed XFF claiming a trusted proxy ignored", "203.0.113.7:1", []string{"10.0.0.1"}, proxies, "203.0.113.7"},
		{"trusted peer without XFF is the client", "10.1.2.3:1", nil, proxies, "10.1.2.3"},
		{"one trusted proxy", "10.1.2.3:1", []string{"192.0.2.1"}, proxies, "192.0.2.1"},
		{"chain through two trusted proxies", "10.1.2.3:1", []string{"198.51.100.4, 192.168.5.9"}, proxies, "198.51.100.4"},
		{"two proxies, two headers", "10.1.2.3:1", []string{"198.51.100.4", "192.168.5.9"}, proxies, "198.51.100.4"},
		{"client-supplied entries left of the client ignored", "10.1.2.3:1", []string{"1.1.1.1, 10.9.9.9, 198.51.100.4, 192.168.5.9"}, proxies, "198.51.100.4"},
		{"garbage rightmost entry: the proxy", "10.1.2.3:1", []string{"192.0.2.1, nonsense"}, proxies, "10.1.2.3"},
		{"garbage after a trusted hop: that hop", "10.1.2.3:1", []string{"unknown, 192.168.5.9"}, proxies, "192.168.5.9"},
		{"garbage left of the client is never read", "10.1.2.3:1", []string{"<script>, 192.0.2.1"}, proxies, "192.0.2.1"},
		{"empty entry stops the walk", "10.1.2.3:1", []string{"192.0.2.1, "}, proxies, "10.1.2.3"},
		{"zoned entry is garbage", "10.1.2.3:1", []string{"fe80::1%eth0"}, proxies, "10.1.2.3"},
		{"entry with a port", "10.1.2.3:1", []string{"192.0.2.1:5678"}, proxies, "192.0.2.1"},
		{"IPv6 entry with a port", "10.1.2.3:1", []string{"[2001:db8::7]:5678"}, proxies, "2001:db8::7"},
		{"IPv4-mapped entry unmapped", "10.1.2.3:1", []string{"::ffff:192.0.2.1"}, proxies, "192.0.2.1"},
		{"IPv6 trusted proxy", "[fd00::1]:1", []string{"2001:db8::7"}, proxies, "2001:db8::7"},
		{"IPv4-mapped peer matched as IPv4", "[::ffff:10.1.2.3]:1", []string{"192.0.2.1"}, proxies, "192.0.2.1"},
		{"all hops trusted: the leftmost", "10.1.2.3:1", []string{"10.4.4.4, 192.168.5.9"}, proxies, "10.4.4.4"},
		{"peer without a port", "10.1.2.3", []string{"192.0.2.1"}, proxies, "192.0.2.1"},
		{"peer not an address", "pipe", []string{"192.0.2.1"}, proxies, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.remote
			for _, h := range tc.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			a, ok := ClientAddr(r, tc.trusted)
			got := ""
			if ok {
				got = a.String()
			}
			if got != tc.want || ok != a.IsValid() {
				t.Errorf("ClientAddr = %q (ok %v), want %q", got, ok, tc.want)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.0/8,,192.0.2.7 , 2001:db8::/32,::1")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32 ::1/128]" {
		t.Errorf("got %v", got)
	}
	if got, err := ParseTrustedProxies(""); err != nil || got != nil {
		t.Errorf("empty = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "ten", "10.0.0.0/8;", "10.1.2.3/8", "::ffff:10.0.0.0/104", "fe80::1%eth0", "10.0.0.0/8, *"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLoginLimitSeparatesClientsBehindATrustedProxy(t *testing.T) {
	const proxy = "10.1.2.3:40000"
	// Two clients behind the same proxy, each with its own limit of 2.
	attempt := func(s *loginServer, client string) int {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/login/github?code=guess&state=ui", nil)
		req.RemoteAddr = proxy
		req.Header.Set("X-Forwarded-For", client)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code
	}
	limiter := func() *auth.Limiter {
		return auth.NewLimiter(auth.LimiterConfig{Rate: rate.Every(time.Hour), Burst: 2})
	}

	trusted := newLoginServerConfig(t, LoginConfig{Limiter: limiter(), TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for i := range 2 {
		if got := attempt(trusted, "198.51.100.1"); got != http.StatusUnauthorized {
			t.Fatalf("trusted proxy: client A attempt %d = %d, want 401", i+1, got)
		}
	}
	if got := attempt(trusted, "198.51.100.1"); got != http.StatusTooManyRequests {
		t.Fatalf("trusted proxy: client A over its limit = %d, want 429", got)
	}
	if got := attempt(trusted, "198.51.100.2"); got != http.StatusUnauthorized {
		t.Fatalf("trusted proxy: client B = %d, want 401 (its own limit)", got)
	}

	plain := newLoginServerConfig(t, LoginConfig{Limiter: limiter()})
	for i := range 2 {
		if got := attempt(plain, "198.51.100.1"); got != http.StatusUnauthorized {
			t.Fatalf("no setting: client A attempt %d = %d, want 401", i+1, got)
		}
	}
	if got := attempt(plain, "198.51.100.2"); got != http.StatusTooManyRequests {
		t.Fatalf("no setting: client B = %d, want 429 (the proxy's shared limit)", got)
	}
}

func TestRequestLogNamesTheClientBehindATrustedProxy(t *testing.T) {
	var buf bytes.Buffer
	s, err := New(Config{Authenticator: allowAll{}, Resources: []Resource{probeResource{}},
		Logger:         slog.New(slog.NewJSONHandler(&buf, nil)),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		remote, xff, want, wantProxy string
	}{
		{"10.1.2.3:40000", "198.51.100.1", "198.51.100.1", "10.1.2.3:40000"},
		{"203.0.113.7:5555", "198.51.100.1", "203.0.113.7:5555", ""},
		{"10.1.2.3:40000", "", "10.1.2.3:40000", ""},
	}
	for _, tc := range tests {
		buf.Reset()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/version", nil)
		req.RemoteAddr = tc.remote
		if tc.xff != "" {
			req.Header.Set("X-Forwarded-For", tc.xff)
		}
		s.ServeHTTP(httptest.NewRecorder(), req)
		var line map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &line); err != nil {
			t.Fatalf("log %q: %v", buf.String(), err)
		}
		proxy, _ := line["proxy"].(string)
		if line["remote"] != tc.want || proxy != tc.wantProxy {
			t.Errorf("%s via XFF %q: logged remote %v proxy %q, want %s %q", tc.remote, tc.xff, line["remote"], proxy, tc.want, tc.wantProxy)
		}
	}
}
