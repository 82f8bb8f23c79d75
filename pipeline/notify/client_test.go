package notify

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestNotifyClientRefusesPrivateAndPlainHTTPByDefault(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer srv.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer tls.Close()

	strict := Client(false)
	if _, err := strict.Post(srv.URL, "application/json", strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "use https") {
		t.Fatalf("plain http: %v", err)
	}
	// HTTPS to loopback is refused at dial time.
	tr := strict.Transport.(httpsOnly).next.(*http.Transport)
	tr.TLSClientConfig = tls.Client().Transport.(*http.Transport).TLSClientConfig
	if _, err := strict.Post(tls.URL, "application/json", strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "not a public address") {
		t.Fatalf("https to loopback: %v", err)
	}
	if hits != 0 {
		t.Fatalf("%d requests got through", hits)
	}

	open := Client(true)
	r, err := open.Post(srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if hits != 1 {
		t.Fatalf("allowed client: %d hits", hits)
	}
}

func TestNotifyClientFollowsNoRedirects(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("redirect followed") }))
	defer target.Close()
	redir := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	defer redir.Close()
	if _, err := Client(true).Get(redir.URL); err == nil || !strings.Contains(err.Error(), "redirects are not followed") {
		t.Fatalf("redirect: %v", err)
	}
}

func TestPublicAddr(t *testing.T) {
	for a, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true,
		"127.0.0.1": false, "10.1.2.3": false, "192.168.0.1": false, "172.16.5.4": false,
		"169.254.169.254": false, "100.64.0.1": false, "::1": false, "fe80::1": false,
		"fd00::1": false, "0.0.0.0": false, "::ffff:127.0.0.1": false, "224.0.0.1": false,
	} {
		if got := publicAddr(netip.MustParseAddr(a)); got != want {
			t.Errorf("publicAddr(%s) = %v, want %v", a, got, want)
		}
	}
}
