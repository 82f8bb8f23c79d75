// Package web is Kontinuous's web UI: plain ES modules, a stylesheet and
// an icon, embedded in the binary and served with no build step. The page
// talks only to the server's own API (/api/v1) with a Bearer token it keeps
// in sessionStorage.
//
// Assets are served under /-/assets/{version}/ where version is a hash of
// every embedded file: they are cached for a year, and index.html (never
// cached) names the current version. "-" cannot start a GitHub owner name,
// so asset paths never shadow a pipeline's page.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strings"
)

//go:embed static
var static embed.FS

// AssetPrefix is where the UI's assets are served; the version follows it.
const AssetPrefix = "/-/assets/"

// ContentSecurityPolicy is sent with every UI response: no inline script,
// no framing, nothing from another origin.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// file is one embedded asset, with its gzip form when that is smaller.
type file struct {
	body, gz    []byte
	contentType string
}

// UI serves the web UI. Create it with New.
type UI struct {
	version string
	index   file
	assets  map[string]file
}

// New reads the embedded files, computes their version and compresses them.
func New() (*UI, error) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	raw := map[string][]byte{}
	h := sha256.New()
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		raw[p] = b
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: reading embedded files: %w", err)
	}
	idx, ok := raw["index.html"]
	if !ok {
		return nil, fmt.Errorf("web: index.html is not embedded")
	}
	u := &UI{version: hex.EncodeToString(h.Sum(nil))[:12], assets: map[string]file{}}
	for p, b := range raw {
		if p == "index.html" {
			continue
		}
		u.assets[p] = newFile(p, b)
	}
	idx = bytes.ReplaceAll(idx, []byte("{{ASSETS}}"), []byte(u.AssetBase()))
	u.index = newFile("index.html", idx)
	return u, nil
}

func newFile(name string, b []byte) file {
	ct := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js", ".mjs":
		ct = "text/javascript; charset=utf-8"
	case ".css":
		ct = "text/css; charset=utf-8"
	case ".html":
		ct = "text/html; charset=utf-8"
	case ".svg":
		ct = "image/svg+xml"
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	f := file{body: b, contentType: ct}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // the level is valid
	_, _ = zw.Write(b)                                       // a bytes.Buffer does not fail
	_ = zw.Close()
	if buf.Len() < len(b) {
		f.gz = buf.Bytes()
	}
	return f
}

// Version identifies the embedded files (a hash of them).
func (u *UI) Version() string { return u.version }

// AssetBase is the URL path of the current assets, without a trailing slash.
func (u *UI) AssetBase() string { return AssetPrefix + u.version }

// Client-side routes: these answer 200 with the page; any other path
// answers the page with 404 (it shows "Page not found"). Owners follow the
// forge-neutral name rule (Bitbucket workspaces may hold '_' and '.').
var routes = []*regexp.Regexp{
	regexp.MustCompile(`^/$`),
	regexp.MustCompile(`^/new$`),
	regexp.MustCompile(`^/auth/callback/[a-z0-9-]+$`),
	regexp.MustCompile(`^/oauth/1\.0a/authorize$`),
	regexp.MustCompile(`^/account$`),
	regexp.MustCompile(`^/[A-Za-z0-9._][A-Za-z0-9._-]{0,99}/[A-Za-z0-9._-]{1,100}(/settings)?$`),
	regexp.MustCompile(`^/[A-Za-z0-9._][A-Za-z0-9._-]{0,99}/[A-Za-z0-9._-]{1,100}/builds/[1-9][0-9]{0,9}(/stages/[1-9][0-9]{0,4})?$`),
}

// IsRoute reports whether p is one of the UI's client-side routes.
func IsRoute(p string) bool {
	for _, re := range routes {
		if re.MatchString(p) {
			return true
		}
	}
	return false
}

// setSecurityHeaders sets the headers every UI response carries.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// ServeHTTP serves an asset under /-/assets/{version}/ or else the page.
// The caller decides which requests reach the UI (GETs and HEADs).
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	setSecurityHeaders(h)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, AssetPrefix); ok {
		ver, name, _ := strings.Cut(rest, "/")
		f, found := u.assets[name]
		if ver != u.version || !found {
			h.Set("Cache-Control", "no-store")
			http.Error(w, "no such asset (the page may be older than the server: reload it)", http.StatusNotFound)
			return
		}
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		u.write(w, r, f, http.StatusOK)
		return
	}
	status := http.StatusOK
	if !IsRoute(r.URL.Path) {
		status = http.StatusNotFound
	}
	h.Set("Cache-Control", "no-cache")
	u.write(w, r, u.index, status)
}

func (u *UI) write(w http.ResponseWriter, r *http.Request, f file, status int) {
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	body := f.body
	if f.gz != nil {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			body = f.gz
		}
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body) // the client may be gone
	}
}

func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") || strings.TrimSpace(name) == "*" {
			return !strings.Contains(strings.ReplaceAll(params, " ", ""), "q=0") || strings.Contains(params, "q=0.")
		}
	}
	return false
}
