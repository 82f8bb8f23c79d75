// Package api serves Kontinuous's HTTP API: go-restful resources for
// pipelines, builds, stages and logs, login, health, metrics and the
// OpenAPI description. It speaks HTTP and calls the pipeline and auth
// packages; it never talks to etcd or GitHub itself.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emicklei/go-restful/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Body limits of the contract.
const (
	// MaxJSONBody bounds JSON request bodies (1 MiB).
	MaxJSONBody = 1 << 20
	// MaxWebhookBody bounds webhook deliveries (25 MiB, GitHub's own cap).
	MaxWebhookBody = 25 << 20
)

// Route metadata keys.
const (
	// metaPublic marks a route that needs no Bearer token. Every other route
	// is authenticated: the safe path is the default.
	metaPublic = "kontinuous.public"
)

// Authenticator verifies a request's credentials (the Bearer token) and
// returns a context carrying the caller's identity. The auth package
// implements it; defined here because this is where it is consumed.
type Authenticator interface {
	Authenticate(r *http.Request) (context.Context, error)
}

// Config is what the API server needs. Zero values get defaults where
// noted.
type Config struct {
	// Logger receives one line per request (default slog.Default()).
	Logger *slog.Logger
	// Version is shown at /version.
	Version string
	// PublicURL is the server's public base URL (webhooks, links).
	PublicURL string
	// CORSOrigins a browser UI may call from (default: PublicURL's origin).
	CORSOrigins []string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed for the request log's remote field (see ClientAddr). Empty:
	// the TCP peer.
	TrustedProxies []netip.Prefix
	// Ready reports whether backing services (etcd) are reachable.
	Ready func(ctx context.Context) error
	// Space, when set, reports etcd's database size against its quota
	// and its alarms, shown by /readyz.
	Space func(ctx context.Context) (EtcdSpace, error)
	// Authenticator verifies Bearer tokens. Required.
	Authenticator Authenticator
	// Registry receives the HTTP metrics (default: a new registry that
	// also has the Go and process collectors).
	Registry *prometheus.Registry
	// Resources are the resource modules to mount (login, pipelines...).
	Resources []Resource
	// SwaggerUI serves /apidocs/ (optional).
	SwaggerUI http.Handler
	// UI serves the web UI (optional): GETs that accept HTML on paths that
	// are not the API's, and its assets under /-/ (see withUI).
	UI http.Handler
}

// Resource is one API resource: it returns its own WebService(s).
type Resource interface {
	WebServices() []*restful.WebService
}

// Server is the assembled HTTP API.
type Server struct {
	cfg       Config
	container *restful.Container
	handler   http.Handler
	metrics   *httpMetrics
	origins   map[string]bool
}

// New assembles the container: resources, filters, OpenAPI, health and
// metrics routes.
func New(cfg Config) (*Server, error) {
	if cfg.Authenticator == nil {
		return nil, fmt.Errorf("api: an Authenticator is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	}
	if cfg.Ready == nil {
		cfg.Ready = func(context.Context) error { return nil }
	}
	s := &Server{cfg: cfg, origins: map[string]bool{}}
	origins := cfg.CORSOrigins
	if len(origins) == 0 && cfg.PublicURL != "" {
		origins = []string{cfg.PublicURL}
	}
	for _, o := range origins {
		if u, err := url.Parse(strings.TrimSpace(o)); err == nil && u.Scheme != "" && u.Host != "" {
			s.origins[strings.ToLower(u.Scheme+"://"+u.Host)] = true
		} else if o == "*" {
			s.origins["*"] = true
		}
	}
	m, err := newHTTPMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m

	c := restful.NewContainer()
	c.Router(restful.CurlyRouter{})
	c.ServiceErrorHandler(func(se restful.ServiceError, req *restful.Request, resp *restful.Response) {
		msg := se.Message
		switch se.Code {
		case http.StatusNotFound:
			msg = "no route for " + req.Request.Method + " " + req.Request.URL.Path
		case http.StatusMethodNotAllowed:
			msg = "method " + req.Request.Method + " not allowed on " + req.Request.URL.Path
		case http.StatusUnsupportedMediaType:
			msg = "unsupported Content-Type; send application/json"
		case http.StatusNotAcceptable:
			msg = "cannot produce the requested Accept type"
		}
		writeStatus(resp, se.Code, msg)
	})
	// A panicking handler answers 500 in the error shape instead of
	// dropping the connection (go-restful does not recover by default).
	c.DoNotRecover(false)
	c.RecoverHandler(func(p any, w http.ResponseWriter) {
		if p == http.ErrAbortHandler {
			panic(p)
		}
		cfg.Logger.Error("panic in handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		WriteHTTPError(w, http.StatusInternalServerError, "internal error")
	})
	c.Filter(s.observe)
	c.Filter(s.authenticate)

	services := []*restful.WebService{s.systemWebService()}
	for _, r := range cfg.Resources {
		services = append(services, r.WebServices()...)
	}
	for _, ws := range services {
		c.Add(ws)
	}
	c.Add(openAPIWebService(services, cfg.Version))
	c.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	if cfg.SwaggerUI != nil {
		c.Handle("/apidocs/", cfg.SwaggerUI)
		c.Handle("/apidocs", cfg.SwaggerUI)
	}
	s.container = c
	s.handler = s.cors(s.limitBodies(c))
	if cfg.UI != nil {
		s.handler = withUI(s.handler, cfg.UI)
	}
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// authenticate is a container filter: every route not marked public needs
// valid credentials. Unmatched routes pass so the router answers 404/405.
func (s *Server) authenticate(req *restful.Request, resp *restful.Response, chain *restful.FilterChain) {
	route := req.SelectedRoute()
	if route == nil || isPublic(route.Metadata()) {
		chain.ProcessFilter(req, resp)
		return
	}
	ctx, err := s.cfg.Authenticator.Authenticate(req.Request)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	req.Request = req.Request.WithContext(ctx)
	chain.ProcessFilter(req, resp)
}

func isPublic(md map[string]any) bool {
	v, ok := md[metaPublic].(bool)
	return ok && v
}

// observe logs each request and records its metrics. It logs the path
// without the query (which could carry tokens a client put there).
func (s *Server) observe(req *restful.Request, resp *restful.Response, chain *restful.FilterChain) {
	start := time.Now()
	// Compact JSON: go-restful indents by default, which costs a third of
	// the throughput on large lists and helps no client.
	resp.PrettyPrint(false)
	chain.ProcessFilter(req, resp)
	d := time.Since(start)
	route := "unmatched"
	if r := req.SelectedRoute(); r != nil {
		route = r.Path()
	}
	status := resp.StatusCode()
	if status == 0 {
		status = http.StatusOK
	}
	s.metrics.observe(req.Request.Method, route, status, d)
	level := slog.LevelInfo
	attrs := []any{"method", req.Request.Method, "path", req.Request.URL.Path, "status", status,
		"duration", d.Round(time.Microsecond).String()}
	attrs = append(attrs, s.remoteAttrs(req.Request)...)
	if err, ok := req.Attribute(attrError).(error); ok && err != nil {
		level = slog.LevelError
		attrs = append(attrs, "error", err.Error())
	}
	s.cfg.Logger.Log(req.Request.Context(), level, "request", attrs...)
}

// remoteAttrs are the request log's remote fields: the TCP peer, or, when
// it is a trusted proxy that forwarded for someone, the client's address
// and the proxy as "proxy".
func (s *Server) remoteAttrs(r *http.Request) []any {
	if len(s.cfg.TrustedProxies) > 0 {
		if a, ok := ClientAddr(r, s.cfg.TrustedProxies); ok && a != peerAddr(r.RemoteAddr) {
			return []any{"remote", a.String(), "proxy", r.RemoteAddr}
		}
	}
	return []any{"remote", r.RemoteAddr}
}

// bodyLimiter is a Resource that raises the body cap of some requests
// (BuildResources: a forge's webhook deliveries); 0 = the default cap.
type bodyLimiter interface {
	BodyLimit(r *http.Request) int64
}

// limitBodies caps request bodies: webhook deliveries (see
// BuildResources.BodyLimit) at 25 MiB, the rest, manual triggers included, at
// 1 MiB. Handlers that read past the cap get an *http.MaxBytesError, which
// writeError maps to 413. Every body is read with deadlines (see
// withReadDeadlines): a stalled or trickling client is cut off.
func (s *Server) limitBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			limit := int64(MaxJSONBody)
			for _, res := range s.cfg.Resources {
				if bl, ok := res.(bodyLimiter); ok {
					if n := bl.BodyLimit(r); n > 0 {
						limit = n
						break
					}
				}
			}
			if r.ContentLength > limit {
				WriteHTTPError(w, http.StatusRequestEntityTooLarge, "request body exceeds "+strconv.FormatInt(limit, 10)+" bytes")
				return
			}
			// A shallow copy: the server keeps its own body (unwrapped) for
			// what it does after the handler, and w.req is not changed.
			r = r.WithContext(r.Context())
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			body := withReadDeadlines(w, r, limit)
			r.Body = body
			// What the handler left unread is discarded by the server
			// after it; that, too, may wait at most BodyIdleTimeout.
			defer body.(*readDeadlineBody).bound()
		}
		next.ServeHTTP(w, r)
	})
}

// cors answers preflights and adds CORS headers for allowed origins.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		allowed := s.origins["*"] || s.origins[strings.ToLower(origin)]
		h := w.Header()
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				WriteHTTPError(w, http.StatusForbidden, "origin "+origin+" is not allowed (see --cors-origins)")
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, Origin, X-Custom-Event")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "Retry-After, Location")
		}
		next.ServeHTTP(w, r)
	})
}

// Routes lists "METHOD path" of every registered route (for tests).
func (s *Server) Routes() []string {
	var out []string
	for _, ws := range s.container.RegisteredWebServices() {
		for _, r := range ws.Routes() {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	slices.Sort(out)
	return out
}
