package gitrepo

import (
	"net/http"
	"net/http/cgi"
	"strconv"
	"strings"
)

// Refusal is a refused git request, answered as text with Status and
// Message; Realm, when set, asks for basic auth (WWW-Authenticate).
type Refusal struct {
	Status  int
	Realm   string
	Message string
}

// Check authenticates a git request for the repository owner/name (as in
// the URL, ".git" trimmed); push tells whether the request pushes. It
// returns the repository and the user name git-http-backend sees as
// REMOTE_USER, or a Refusal.
type Check func(req *http.Request, owner, name string, push bool) (*Repo, string, *Refusal)

// Handler serves git smart HTTP for prefix{owner}/{name}.git/... (prefix
// such as "/git/") from the repositories of rt, each request let through
// by check.
func (rt *Root) Handler(prefix string, check Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rt.serve(w, req, prefix, check)
	})
}

func (rt *Root) serve(w http.ResponseWriter, req *http.Request, prefix string, check Check) {
	parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, prefix), "/", 3)
	if len(parts) < 3 {
		http.NotFound(w, req)
		return
	}
	owner, name, rest := parts[0], strings.TrimSuffix(parts[1], ".git"), parts[2]
	push := req.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(rest, "git-receive-pack")
	r, remoteUser, refused := check(req, owner, name, push)
	if refused != nil {
		if refused.Realm != "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+refused.Realm+`"`)
		}
		http.Error(w, refused.Message, refused.Status)
		return
	}
	out := req.Clone(req.Context())
	out.Header.Del("Authorization")
	out.URL.Path = "/" + r.rel + "/" + rest
	out.URL.RawPath = ""
	env := append(rt.env(""), "GIT_PROJECT_ROOT="+rt.dir, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER="+remoteUser)
	if n := len(rt.cfg.ServeConfig); n > 0 {
		env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(n))
		for i, kv := range rt.cfg.ServeConfig {
			k, v, _ := strings.Cut(kv, "=")
			env = append(env, "GIT_CONFIG_KEY_"+strconv.Itoa(i)+"="+k, "GIT_CONFIG_VALUE_"+strconv.Itoa(i)+"="+v)
		}
	}
	h := &cgi.Handler{Path: rt.backend, Root: "/", Dir: rt.dir, Env: env}
	h.ServeHTTP(w, out)
}
