package api

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"time"

	restfulspec "github.com/emicklei/go-restful-openapi/v2"
	restful "github.com/emicklei/go-restful/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Health is the body of /healthz and /readyz.
type Health struct {
	Status string `json:"status"`
	// Etcd is etcd's space on /readyz (when the server can ask for it).
	Etcd *EtcdSpace `json:"etcd,omitempty"`
}

// EtcdSpace is etcd's database size against its quota, as /readyz shows
// it (/metrics has the same as gauges).
type EtcdSpace struct {
	DBSize      int64    `json:"db_size" description:"bytes of the largest member's database file: what the quota is checked against"`
	DBSizeInUse int64    `json:"db_size_in_use" description:"bytes of it holding live data (a defragmentation gives the rest back)"`
	Quota       int64    `json:"quota" description:"the members' quota in bytes (0: not reported)"`
	Alarms      []string `json:"alarms" description:"raised alarms (NOSPACE: writes are refused until an operator frees space and disarms it)"`
}

// VersionInfo is the body of /version.
type VersionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
}

const tagSystem = "system"

// systemWebService serves /healthz, /readyz and /version.
func (s *Server) systemWebService() *restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/").Produces(restful.MIME_JSON)
	tags := []string{tagSystem}
	// Probes may ask for text/plain: they get the same JSON.
	probe := []string{restful.MIME_JSON, "text/plain", "*/*"}
	ws.Route(ws.GET("/healthz").To(s.healthz).Produces(probe...).
		Doc("Liveness: the process serves HTTP").
		Metadata(restfulspec.KeyOpenAPITags, tags).Metadata(metaPublic, true).
		Writes(Health{}).
		Returns(http.StatusOK, "alive", Health{}))
	ws.Route(ws.GET("/readyz").To(s.readyz).Produces(probe...).
		Doc("Readiness: etcd is reachable and writable (a NOSPACE alarm makes it 503 naming the cause); shows etcd's database size against its quota").
		Metadata(restfulspec.KeyOpenAPITags, tags).Metadata(metaPublic, true).
		Writes(Health{}).
		Returns(http.StatusOK, "ready", Health{}).
		Returns(http.StatusServiceUnavailable, "etcd unreachable", Error{}))
	ws.Route(ws.GET("/version").To(s.version).
		Doc("Build version").
		Metadata(restfulspec.KeyOpenAPITags, tags).Metadata(metaPublic, true).
		Writes(VersionInfo{}).
		Returns(http.StatusOK, "version", VersionInfo{}))
	return ws
}

func (s *Server) healthz(req *restful.Request, resp *restful.Response) {
	writeJSON(resp, http.StatusOK, Health{Status: "ok"})
}

func (s *Server) readyz(req *restful.Request, resp *restful.Response) {
	ctx, cancel := context.WithTimeout(req.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Ready(ctx); err != nil {
		msg := "not ready: etcd unreachable"
		var pe *pipeline.PublicError
		if errors.As(err, &pe) {
			msg = "not ready: " + pe.Msg // e.g. etcd's NOSPACE alarm
		}
		writeStatus(resp, http.StatusServiceUnavailable, msg)
		return
	}
	h := Health{Status: "ready"}
	if s.cfg.Space != nil {
		if sp, err := s.cfg.Space(ctx); err == nil {
			if sp.Alarms == nil {
				sp.Alarms = []string{}
			}
			h.Etcd = &sp
		}
	}
	writeJSON(resp, http.StatusOK, h)
}

func (s *Server) version(req *restful.Request, resp *restful.Response) {
	writeJSON(resp, http.StatusOK, VersionInfo{Version: s.cfg.Version, Go: runtime.Version()})
}

// httpMetrics are the Prometheus metrics of the HTTP layer.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kontinuous_http_requests_total",
			Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kontinuous_http_request_duration_seconds",
			Help:    "HTTP request latency by method and route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method", "route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *httpMetrics) observe(method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(method, route, statusLabel(status)).Inc()
	m.latency.WithLabelValues(method, route).Observe(d.Seconds())
}

func statusLabel(code int) string { return strconv.Itoa(code) }
