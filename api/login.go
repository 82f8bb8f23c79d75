package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
)

const tagLogin = "login"

// LoginService runs the GitHub web login; *auth.Login implements it.
// Defined here, where it is consumed.
type LoginService interface {
	Authorize(redirectURI string) (string, error)
	Complete(ctx context.Context, code, state, redirectURI string) (auth.LoginResult, error)
}

// Linker is a LoginService that can also connect its forge to a user
// signed in with another forge; *auth.Login implements it.
type Linker interface {
	CanLink() bool
	AuthorizeLink(redirectURI, userID string) (string, error)
	// CompleteAs finishes a login for a caller who presented their
	// token: an auth.LinkResult for a connect state, else an
	// auth.LoginResult.
	CompleteAs(ctx context.Context, code, state, redirectURI, userID, login string) (any, error)
}

// LoginConfig configures NewLoginResources.
type LoginConfig struct {
	// Login runs the flow (required).
	Login LoginService
	// Others are the logins of the other enabled forges, by forge name
	// ("bitbucket"): each gets GET /api/v1/login/{name}/authorize and
	// POST /api/v1/login/{name}, answering as GitHub's routes do.
	Others map[string]LoginService
	// Authenticator, when set, reads an optional Bearer token on the login
	// routes: a signed-in user who presents it connects the forge to their
	// account (see Linker) instead of signing in as another identity.
	Authenticator Authenticator
	// Limiter bounds login attempts per client address (default:
	// auth.NewLimiter with its defaults: bursts of 10, 30 a minute).
	Limiter *auth.Limiter
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed. Empty (the default): the TCP peer is the client.
	TrustedProxies []netip.Prefix
}

// LoginResources serves the GitHub login: GET /api/v1/login/github/authorize,
// POST /api/v1/login/github and its alias POST /login/github (what the
// original web UI calls). They are the public routes of the API; every
// one of them is rate-limited per client address.
type LoginResources struct {
	cfg LoginConfig
}

// NewLoginResources returns the login resources.
func NewLoginResources(cfg LoginConfig) *LoginResources {
	if cfg.Limiter == nil {
		cfg.Limiter = auth.NewLimiter(auth.LimiterConfig{})
	}
	return &LoginResources{cfg: cfg}
}

// AuthorizeURL is the answer of GET /api/v1/login/{forge}/authorize to
// a client that asks for JSON: a web UI cannot send its Bearer token on a
// browser navigation, so it fetches the URL (with the token, to connect an
// account) and then navigates to it.
type AuthorizeURL struct {
	URL string `json:"url" description:"the forge's authorize URL, with the server-issued state; send the browser there"`
}

// authorizeJSONDoc documents the JSON variant of the authorize routes.
const authorizeJSONDoc = "With Accept: application/json it answers 200 {\"url\": …} (the same URL, the same state rules) instead of the redirect: how a web UI starts a connect, since a browser navigation cannot carry the Bearer token"

// LoginRequest is the optional body of POST /login/github; query
// parameters of the same names take precedence.
type LoginRequest struct {
	Code        string `json:"code" description:"the code GitHub gave the browser"`
	State       string `json:"state" description:"the state GitHub echoed"`
	RedirectURI string `json:"redirect_uri,omitempty" description:"the redirect_uri the login started with"`
}

// WebServices implements Resource.
func (r *LoginResources) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1/login").Produces(restful.MIME_JSON)
	ws.Route(doc(ws.GET("/github/authorize").To(r.authorize).Filter(r.limit).
		Doc("Start a GitHub login: redirects to GitHub's authorize page with a server-issued state (ks1., single use, 10 minutes). With the Bearer token of a user signed in with another forge, it starts connecting GitHub to that user instead (account linking). "+authorizeJSONDoc).
		Param(ws.QueryParameter("redirect_uri", "where GitHub sends the browser back (absolute http(s) URL); default: the OAuth app's callback").DataType("string")).
		Metadata(metaPublic, true).Metadata(metaOptionalBearer, true). // a Bearer token makes it a connect
		Writes(AuthorizeURL{}).
		Returns(http.StatusOK, "with Accept: application/json: the authorize URL", AuthorizeURL{}).
		Returns(http.StatusFound, "redirect to GitHub (Location header)", nil).
		Returns(http.StatusNotImplemented, "GitHub login is not configured on this server", Error{}), tagLogin, 400, 401, 429))
	ws.Route(r.complete(ws, ws.POST("/github")).
		Doc("Finish a GitHub login: exchange the code, store the user and their GitHub token, answer a Kontinuous JWT"))

	for _, name := range slices.Sorted(maps.Keys(r.cfg.Others)) {
		l := r.cfg.Others[name]
		ws.Route(doc(ws.GET("/"+name+"/authorize").To(func(req *restful.Request, resp *restful.Response) { r.authorizeWith(l, req, resp) }).Filter(r.limit).
			Doc("Start a "+name+" login: redirects to "+name+"'s authorize page with a server-issued state (ks1., single use, 10 minutes). With the Bearer token of a user signed in with another forge, it starts connecting "+name+" to that user instead (account linking). "+authorizeJSONDoc).
			Param(ws.QueryParameter("redirect_uri", "where "+name+" sends the browser back (absolute http(s) URL); default: the OAuth consumer's callback").DataType("string")).
			Metadata(metaPublic, true).Metadata(metaOptionalBearer, true). // a Bearer token makes it a connect
			Writes(AuthorizeURL{}).
			Returns(http.StatusOK, "with Accept: application/json: the authorize URL", AuthorizeURL{}).
			Returns(http.StatusFound, "redirect to "+name+" (Location header)", nil), tagLogin, 400, 401, 429))
		ws.Route(doc(ws.POST("/"+name).To(func(req *restful.Request, resp *restful.Response) { r.loginWith(l, req, resp) }).Filter(r.limit).
			Param(ws.QueryParameter("code", "the code "+name+" gave the browser (required)").DataType("string")).
			Param(ws.QueryParameter("state", "the state "+name+" echoed (required)").DataType("string")).
			Param(ws.QueryParameter("redirect_uri", "the redirect_uri the login started with, if any").DataType("string")).
			Metadata(metaPublic, true).
			Writes(auth.LoginResult{}).
			Returns(http.StatusOK, "logged in", auth.LoginResult{}).
			Doc("Finish a "+name+" login (also how an expired connection is reconnected): exchange the code, store the user and their token, answer a Kontinuous JWT. For a state started with a Bearer token (connecting "+name+" to a signed-in user), send the same Bearer token: the account is linked to that user and the reply is {user_id, user_name, connected: {forge, user_id, login, status}}, no JWT; 409 when the account is linked to another user"),
			tagLogin, 400, 401, 409, 413, 429, 502, 503))
	}

	alias := new(restful.WebService)
	alias.Path("/login").Produces(restful.MIME_JSON)
	alias.Route(r.complete(alias, alias.POST("/github")).
		Doc("Alias of POST /api/v1/login/github, as the original web UI calls it"))
	return []*restful.WebService{ws, alias}
}

// complete documents a code-exchange route.
func (r *LoginResources) complete(ws *restful.WebService, rb *restful.RouteBuilder) *restful.RouteBuilder {
	return doc(rb.To(r.login).Filter(r.limit).
		Param(ws.QueryParameter("code", "the code GitHub gave the browser (required)").DataType("string")).
		Param(ws.QueryParameter("state", "the state GitHub echoed (required): a server-issued ks1. state, or the client's own").DataType("string")).
		Param(ws.QueryParameter("redirect_uri", "the redirect_uri the login started with, if any").DataType("string")).
		Metadata(metaPublic, true).Metadata(metaOptionalBearer, true). // with the Bearer token a connect began with
		Writes(auth.LoginResult{}).
		Returns(http.StatusOK, "logged in", auth.LoginResult{}).
		Returns(http.StatusNotImplemented, "GitHub login is not configured on this server", Error{}),
		tagLogin, 400, 401, 409, 413, 429, 502, 503)
}

func (r *LoginResources) authorize(req *restful.Request, resp *restful.Response) {
	r.authorizeWith(r.cfg.Login, req, resp)
}

func (r *LoginResources) authorizeWith(l LoginService, req *restful.Request, resp *restful.Response) {
	id, linker, err := r.bearer(req, l)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	var u string
	if linker != nil {
		u, err = linker.AuthorizeLink(req.QueryParameter("redirect_uri"), id.UserID)
	} else {
		u, err = l.Authorize(req.QueryParameter("redirect_uri"))
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	resp.Header().Set("Cache-Control", "no-store")
	resp.Header().Add("Vary", "Accept")
	if wantsJSON(req.Request) {
		writeJSON(resp, http.StatusOK, AuthorizeURL{URL: u})
		return
	}
	resp.Header().Set("Location", u)
	resp.WriteHeader(http.StatusFound)
}

// wantsJSON reports whether the client asked for JSON by name (Accept:
// application/json) rather than being a browser navigation, which
// accepts text/html and "*/*".
func wantsJSON(r *http.Request) bool {
	asked := false
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q <= 0 {
				continue // "not acceptable"
			}
			switch mt {
			case restful.MIME_JSON:
				asked = true
			case "text/html":
				return false
			}
		}
	}
	return asked
}

func (r *LoginResources) login(req *restful.Request, resp *restful.Response) {
	r.loginWith(r.cfg.Login, req, resp)
}

func (r *LoginResources) loginWith(l LoginService, req *restful.Request, resp *restful.Response) {
	in, err := loginParams(req)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	id, linker, err := r.bearer(req, l)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	var res any
	if linker != nil {
		res, err = linker.CompleteAs(req.Request.Context(), in.Code, in.State, in.RedirectURI, id.UserID, id.Login)
	} else {
		res, err = l.Complete(req.Request.Context(), in.Code, in.State, in.RedirectURI)
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	// The reply carries a credential (RFC 6749 §5.1).
	resp.Header().Set("Cache-Control", "no-store")
	writeJSON(resp, http.StatusOK, res)
}

// bearer reads the optional Bearer token of a login request. With none,
// or for a forge that cannot link, or when the caller signed in with this
// very forge (signing in again reconnects it), linker is nil: a plain
// sign-in. A token that is presented but not valid is a 401, never a
// silent sign-in as someone else.
func (r *LoginResources) bearer(req *restful.Request, l LoginService) (auth.Identity, Linker, error) {
	if req.Request.Header.Get("Authorization") == "" || r.cfg.Authenticator == nil {
		return auth.Identity{}, nil, nil
	}
	linker, ok := l.(Linker)
	if !ok || !linker.CanLink() {
		return auth.Identity{}, nil, nil
	}
	ctx, err := r.cfg.Authenticator.Authenticate(req.Request)
	if err != nil {
		return auth.Identity{}, nil, err
	}
	id, err := auth.FromContext(ctx)
	if err != nil {
		return auth.Identity{}, nil, err
	}
	if s, ok := l.(interface{ Name() string }); ok && pipeline.ForgeName(id.UserID) == s.Name() {
		return auth.Identity{}, nil, nil
	}
	return id, linker, nil
}

// loginParams reads code, state and redirect_uri from the query, filling
// what is missing from a JSON or form body.
func loginParams(req *restful.Request) (LoginRequest, error) {
	q := req.Request.URL.Query()
	in := LoginRequest{Code: q.Get("code"), State: q.Get("state"), RedirectURI: q.Get("redirect_uri")}
	if (in.Code != "" && in.State != "") || req.Request.Body == nil || req.Request.Body == http.NoBody {
		return in, nil
	}
	ct, _, _ := mime.ParseMediaType(req.Request.Header.Get("Content-Type")) // a bad type reads as none
	var body LoginRequest
	switch ct {
	case restful.MIME_JSON:
		b, err := io.ReadAll(req.Request.Body)
		if err != nil {
			return in, err
		}
		if len(strings.TrimSpace(string(b))) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				return in, pipeline.Invalid("body", "is not a JSON object with code and state")
			}
		}
	case "application/x-www-form-urlencoded":
		if err := req.Request.ParseForm(); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return in, err
			}
			return in, pipeline.Invalid("body", "is not a valid form")
		}
		f := req.Request.PostForm
		body = LoginRequest{Code: f.Get("code"), State: f.Get("state"), RedirectURI: f.Get("redirect_uri")}
	}
	if in.Code == "" {
		in.Code = body.Code
	}
	if in.State == "" {
		in.State = body.State
	}
	if in.RedirectURI == "" {
		in.RedirectURI = body.RedirectURI
	}
	return in, nil
}

// limit is a route filter that refuses a client address over its login
// attempt budget with 429 and Retry-After.
func (r *LoginResources) limit(req *restful.Request, resp *restful.Response, chain *restful.FilterChain) {
	ok, wait := r.cfg.Limiter.Allow(clientKey(req.Request, r.cfg.TrustedProxies))
	if !ok {
		secs := auth.RetryAfterSeconds(wait)
		resp.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(req, resp, pipeline.Errorf(pipeline.ErrRateLimited, "too many login attempts from this address; retry in %d s", secs))
		return
	}
	chain.ProcessFilter(req, resp)
}

// clientKey identifies the client for rate limiting: its address (see
// ClientAddr), or for IPv6 its /64 (one subscriber's usual allocation).
func clientKey(r *http.Request, trusted []netip.Prefix) string {
	addr, ok := ClientAddr(r, trusted)
	if !ok {
		return r.RemoteAddr
	}
	if addr.Is6() {
		p, err := addr.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return addr.String()
}
