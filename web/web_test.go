package web

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	var rd io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		rd = zr
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEveryUIResponseCarriesTheSecurityHeaders(t *testing.T) {
	ui, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/acme/demo/builds/3", "/no/such/page/here", ui.AssetBase() + "/app.js", ui.AssetBase() + "/missing.js", "/-/assets/old/app.js"} {
		r := get(t, ui, p)
		h := r.Header
		if h.Get("Content-Security-Policy") != ContentSecurityPolicy || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("%s: headers %v", p, h)
		}
		for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(h.Get("Content-Security-Policy"), want) {
				t.Errorf("%s: CSP lacks %s", p, want)
			}
		}
		if strings.Contains(h.Get("Content-Security-Policy"), "unsafe-inline") {
			t.Errorf("%s: CSP allows inline code", p)
		}
	}
}

func TestClientRoutesLoadThePageAndUnknownPathsSayNotFound(t *testing.T) {
	ui, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/", 200}, {"/new", 200}, {"/acme/demo", 200}, {"/acme/demo/settings", 200}, {"/acme/demo.js/builds/3", 200},
		{"/acme/demo/builds/3/stages/12", 200}, {"/auth/callback/github", 200}, {"/auth/callback/bitbucket-dc", 200}, {"/my_ws/app.js", 200}, {"/my_ws/app/builds/2", 200}, {"/account", 200},
		{"/acme/demo/builds/0", 404}, {"/acme/demo/builds/x", 404}, {"/a/b/c", 404}, {"/-bad/demo", 404},
	} {
		r := get(t, ui, c.path)
		b := body(t, r)
		if r.StatusCode != c.status || !strings.Contains(b, `<script type="module" src="`+ui.AssetBase()+`/app.js">`) {
			t.Errorf("%s: %d, want %d with the page", c.path, r.StatusCode, c.status)
		}
		if r.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: the page must be revalidated, Cache-Control %q", c.path, r.Header.Get("Cache-Control"))
		}
	}
}

func TestThePageHasNoInlineScriptOrStyleAndNoOtherOrigin(t *testing.T) {
	ui, err := New()
	if err != nil {
		t.Fatal(err)
	}
	page := body(t, get(t, ui, "/"))
	if regexp.MustCompile(`<script(?:\s[^>]*)?>[^<\s]`).MatchString(page) || strings.Contains(page, "<style") || strings.Contains(page, " style=") {
		t.Fatal("the page has inline script or style")
	}
	if regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).MatchString(page) {
		t.Fatal("the page loads something from another origin")
	}
	for name, f := range ui.assets {
		if regexp.MustCompile(`https?://`).Match(f.body) && strings.HasSuffix(name, ".css") {
			t.Errorf("%s refers to another origin", name)
		}
		if strings.HasSuffix(name, ".js") && regexp.MustCompile(`\.innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`).Match(f.body) {
			t.Errorf("%s parses strings as markup or code", name)
		}
	}
}

func TestAssetsAreVersionedCachedAndCompressed(t *testing.T) {
	ui, err := New()
	if err != nil {
		t.Fatal(err)
	}
	r := get(t, ui, ui.AssetBase()+"/app.js", "Accept-Encoding", "gzip, deflate, br")
	if r.StatusCode != 200 || r.Header.Get("Content-Encoding") != "gzip" || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("app.js: %d %v", r.StatusCode, r.Header)
	}
	if !strings.Contains(r.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("versioned assets should be cached for long: %q", r.Header.Get("Cache-Control"))
	}
	if !strings.Contains(body(t, r), "render()") {
		t.Fatal("gzip body is not app.js")
	}
	plain := get(t, ui, ui.AssetBase()+"/style.css")
	if plain.Header.Get("Content-Encoding") != "" || !strings.Contains(body(t, plain), "prefers-color-scheme") {
		t.Fatal("a client without gzip gets the plain file")
	}
	for _, p := range []string{"/-/assets/0123456789ab/app.js", ui.AssetBase() + "/nope.js", ui.AssetBase() + "/../index.html"} {
		if r := get(t, ui, p); r.StatusCode != 404 || strings.Contains(r.Header.Get("Cache-Control"), "immutable") {
			t.Errorf("%s: %d %q, want an uncached 404", p, r.StatusCode, r.Header.Get("Cache-Control"))
		}
	}
}

func TestOnlyGetAndHeadAreServed(t *testing.T) {
	ui, err := New()
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", rec.Code)
	}
}
