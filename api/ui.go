package api

import (
	"net/http"
	"strings"
)

// reservedPaths keep their API meaning even for a browser asking for
// HTML: the UI never answers under them.
var reservedPaths = []string{"/api", "/apidocs", "/apidocs.json", "/healthz", "/readyz", "/metrics", "/version", "/login/github"}

// uiAssetPrefix is where the web UI serves its assets (see package web).
const uiAssetPrefix = "/-/"

// withUI sends to ui the GETs and HEADs that accept HTML on paths that are
// not the API's (the UI's client-side routes, loaded directly or on
// reload) and every GET of its assets under /-/; all else goes to api, so
// a non-HTML GET of an unknown path keeps the JSON 404.
func withUI(api, ui http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsUI(r) {
			ui.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

func wantsUI(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	for _, rp := range reservedPaths {
		if p == rp || strings.HasPrefix(p, rp+"/") {
			return false
		}
	}
	if strings.HasPrefix(p, uiAssetPrefix) {
		return true
	}
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(strings.ToLower(v), "text/html") {
			return true
		}
	}
	return false
}
