package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kontinuous/kontinuous/api"
	"github.com/kontinuous/kontinuous/auth/oauth1"
)

// Config is every setting of the server (README, settings table). This is the only
// place that reads the environment.
type Config struct {
	Listen string
	URL    string
	// urlDerived: URL was not set and follows the listen address (a port
	// of 0 is resolved once listening).
	urlDerived     bool
	DataDir        string
	EtcdEndpoints  []string
	EtcdCA         string
	EtcdCert       string
	EtcdKey        string
	AuthSecret     []byte // decoded; nil = generate/keep in the data dir
	TokenTTL       time.Duration
	GitHubClientID string
	GitHubSecret   string
	GitHubURL      string
	GitHubAPIURL   string
	Auth0Issuer    string
	Auth0Audience  string
	Auth0JWKSURL   string
	Executor       string
	TLSCert        string
	TLSKey         string
	CORSOrigins    []string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed (login rate limit, request log); none: the TCP peer.
	TrustedProxies []netip.Prefix
	Kubeconfig     string
	KubeNamespace  string
	KubeNamespaces []string
	// Images and service account of stage pods (kubernetes executor);
	// empty takes the executor's defaults.
	KubeClonerImage, KubeBuilderImage, KubeDefaultImage, KubeServiceAccount string
	// KubeNodePool ("key=value") keeps stage pods on a dedicated node pool.
	KubeNodePool string
	// InternalRegistry is where docker_publish pushes when a stage names
	// no external registry (KONTINUOUS_INTERNAL_REGISTRY in stages).
	InternalRegistry string
	StageTimeout     time.Duration
	StaleAfter       time.Duration
	PermissionTTL    time.Duration
	// AllowForkBuilds lets pull requests from forks run on the local
	// executor (they run untrusted code on the server's host).
	AllowForkBuilds bool
	// NotifyAllowPrivate lets Slack notifications go to plain-HTTP and
	// private or loopback addresses.
	NotifyAllowPrivate bool
	// LinearizableReads makes the store's reads consistent: each takes
	// etcd's current revision and waits for the watch-fed cache to reach it.
	LinearizableReads bool
	LogLevel          string
	// Path is the PATH local stage commands are looked up in (the
	// server's own PATH); DockerHost is DOCKER_HOST for docker stages.
	Path       string
	DockerHost string
	// LocalIsolation is how the local executor isolates command stages:
	// auto, bwrap or none (isolation.go).
	LocalIsolation string
	// Cluster: more than one server, live streams (config_cluster.go).
	Cluster ClusterConfig
	// Bitbucket: the Bitbucket Cloud forge (config_bitbucket.go).
	Bitbucket BitbucketConfig
	// BitbucketDC is the Bitbucket Data Center forge (config_bitbucketdc.go).
	BitbucketDC BitbucketDCConfig
	// OAuth1Consumers are the Application Links' consumers (oauth1.go);
	// none: the OAuth 1.0a provider is off.
	OAuth1Consumers []oauth1.Consumer
}

// setting describes one flag and the environment variables behind it.
type setting struct {
	flag string
	env  []string
	def  string
	help string
}

var settings = []setting{
	{"listen", []string{"KONTINUOUS_LISTEN"}, "127.0.0.1:3005", "HTTP listen address (env also BIND_ADDR + BIND_PORT)"},
	{"url", []string{"KONTINUOUS_URL"}, "", "public base URL; webhooks and links point here (default http://{listen})"},
	{"data-dir", []string{"KONTINUOUS_DATA_DIR"}, "./kontinuous-data", "embedded etcd data, generated secret, workspaces, logs"},
	{"etcd-endpoints", []string{"KV_ADDRESS"}, "", "comma-separated client URLs of an external etcd cluster (empty = embedded)"},
	{"etcd-ca", []string{"ETCD_CA"}, "", "CA file for TLS to an external etcd"},
	{"etcd-cert", []string{"ETCD_CERT"}, "", "client certificate for TLS to an external etcd"},
	{"etcd-key", []string{"ETCD_KEY"}, "", "client key for TLS to an external etcd"},
	{"auth-secret", []string{"AUTH_SECRET"}, "", "base64 shared secret (≥ 32 bytes decoded); default: generated once in the data dir"},
	{"token-ttl", []string{"KONTINUOUS_TOKEN_TTL"}, "24h", "lifetime of JWTs the server issues"},
	{"github-client-id", []string{"GITHUB_CLIENT_ID"}, "", "GitHub OAuth app client id"},
	{"github-client-secret", []string{"GITHUB_CLIENT_SECRET"}, "", "GitHub OAuth app client secret"},
	{"github-url", []string{"GITHUB_URL"}, "https://github.com", "GitHub web base (GitHub Enterprise: its host)"},
	{"github-api-url", []string{"GITHUB_API_URL"}, "https://api.github.com/", "GitHub REST base (GitHub Enterprise: https://host/api/v3/)"},
	{"auth0-issuer", []string{"AUTH0_ISSUER"}, "", "Auth0 issuer, e.g. https://tenant.auth0.com/ (empty = Auth0 off)"},
	{"auth0-audience", []string{"AUTH0_AUDIENCE"}, "", "required aud of Auth0 tokens"},
	{"auth0-jwks-url", []string{"AUTH0_JWKS_URL"}, "", "Auth0 JWKS URL (default {issuer}.well-known/jwks.json)"},
	{"executor", []string{"KONTINUOUS_EXECUTOR"}, "local", "where stages run: local or kubernetes"},
	{"tls-cert", []string{"CERT_FILE"}, "", "TLS certificate file (HTTPS and HTTP/2 when both are set)"},
	{"tls-key", []string{"KEY_FILE"}, "", "TLS key file"},
	{"cors-origins", []string{"KONTINUOUS_CORS_ORIGINS"}, "", "comma-separated origins a browser UI may call from (default: the --url origin)"},
	{"trusted-proxies", []string{"KONTINUOUS_TRUSTED_PROXIES"}, "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed for the login rate limit and request log (empty = the TCP peer is the client)"},
	{"kubeconfig", []string{"KUBECONFIG"}, "", "kubeconfig for the kubernetes executor and deploy stages (empty = in-cluster)"},
	{"kube-namespace", []string{"KONTINUOUS_NAMESPACE"}, "default", "namespace stage Jobs run in (kubernetes executor)"},
	{"kube-allowed-namespaces", []string{"KONTINUOUS_ALLOWED_NAMESPACES"}, "", "extra namespaces a .pipeline.yml may ask for (comma-separated)"},
	{"kube-cloner-image", []string{"KONTINUOUS_KUBE_CLONER_IMAGE"}, "", "image with git and sh that clones the commit in stage pods (default alpine/git)"},
	{"kube-builder-image", []string{"KONTINUOUS_KUBE_BUILDER_IMAGE"}, "", "daemonless image builder for docker_build/docker_publish (default kaniko's executor)"},
	{"kube-default-image", []string{"KONTINUOUS_KUBE_DEFAULT_IMAGE"}, "", "image of command stages that name none and follow no docker_build (default alpine)"},
	{"kube-node-pool", []string{"KONTINUOUS_KUBE_NODE_POOL"}, "", "key=value: stage pods run only on nodes with this label and tolerate the taint key=value:NoSchedule (kubernetes executor)"},
	{"kube-service-account", []string{"KONTINUOUS_KUBE_SERVICE_ACCOUNT"}, "", "service account stage pods run as (default: the namespace's default; no API token is mounted)"},
	{"internal-registry", []string{"KONTINUOUS_INTERNAL_REGISTRY"}, "", "registry host[/path] docker_publish pushes to when a stage names no external_registry"},
	{"stage-timeout", []string{"KONTINUOUS_STAGE_TIMEOUT"}, "1h", "default timeout of a stage without one in its spec"},
	{"permission-ttl", []string{"KONTINUOUS_PERMISSION_TTL"}, "30s", "how long a user's forge permission on a repository is reused before it is asked again (reads keep working from it while the forge is down)"},
	{"stale-after", []string{"KONTINUOUS_STALE_AFTER"}, "45s", "a running build whose server has not been heard from for this long is taken over by another (or a restarted) server"},
	{"allow-fork-builds", []string{"KONTINUOUS_ALLOW_FORK_BUILDS"}, "false", "run pull requests from forks on the local executor (untrusted code on this host; the kubernetes executor always runs them, without secrets)"},
	{"notify-allow-private", []string{"KONTINUOUS_NOTIFY_ALLOW_PRIVATE"}, "false", "let Slack notifications use plain http and private, loopback or link-local addresses (off: https to public addresses only)"},
	{"linearizable-reads", []string{"KONTINUOUS_LINEARIZABLE_READS"}, "false", "consistent reads: each build/pipeline read takes etcd's current revision (one cheap round trip) and waits for the watch-fed cache to reach it (a read on one server then sees a write another server just answered)"},
	{"log-level", []string{"KONTINUOUS_LOG_LEVEL"}, "info", "debug, info, warn or error"},
	{"local-isolation", []string{"KONTINUOUS_LOCAL_ISOLATION"}, "auto", "sandbox of local command stages: auto (bwrap if it works here, else command stages are refused), bwrap (refuse to start without it) or none (stages can read the server's secrets: push access = server access)"},
}

// settingError names the setting that is wrong.
type settingError struct {
	flag, env, msg string
}

func (e *settingError) Error() string {
	return fmt.Sprintf("setting --%s (%s): %s", e.flag, e.env, e.msg)
}

// LoadConfig reads args (without the program name) and the environment
// through getenv; a flag wins over its environment variable.
func LoadConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("kontinuous", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vals := map[string]*string{}
	for _, s := range settings {
		usage := fmt.Sprintf("%s (env %s, default %q)", s.help, strings.Join(s.env, ", "), s.def)
		if s.def == "false" {
			// A switch: --allow-fork-builds alone means true.
			v := new(string)
			fs.Var((*boolText)(v), s.flag, usage)
			vals[s.flag] = v
			continue
		}
		vals[s.flag] = fs.String(s.flag, "", usage)
	}
	// A bad flag gets one line (main prints it); --help the full list.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: kontinuous [healthcheck] [--setting value ...] | lint [file|-] | version; each setting is also an environment variable:")
			fs.PrintDefaults()
			return Config{}, err
		}
		return Config{}, fmt.Errorf("%v (kontinuous --help lists the settings)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (settings are flags like --listen; see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	get := func(name string) string {
		if set[name] {
			return *vals[name]
		}
		for _, s := range settings {
			if s.flag != name {
				continue
			}
			for _, e := range s.env {
				if v := getenv(e); v != "" {
					return v
				}
			}
			if name == "listen" {
				if addr, port := getenv("BIND_ADDR"), getenv("BIND_PORT"); addr != "" || port != "" {
					if addr == "" {
						addr = "127.0.0.1"
					}
					if port == "" {
						port = "3005"
					}
					return net.JoinHostPort(addr, port)
				}
			}
			return s.def
		}
		panic("unknown setting " + name)
	}
	bad := func(name, format string, a ...any) error {
		for _, s := range settings {
			if s.flag == name {
				return &settingError{flag: name, env: strings.Join(s.env, ", "), msg: fmt.Sprintf(format, a...)}
			}
		}
		return fmt.Errorf("setting %s: %s", name, fmt.Sprintf(format, a...))
	}

	var c Config
	var err error
	c.Listen = get("listen")
	if host, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		return c, bad("listen", "%q is not host:port", c.Listen)
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return c, bad("listen", "%q has a bad port", c.Listen)
	} else {
		_ = host // any host, including empty (all interfaces), is allowed
	}
	c.TLSCert, c.TLSKey = get("tls-cert"), get("tls-key")
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, bad("tls-cert", "--tls-cert and --tls-key must be set together")
	}
	c.URL = get("url")
	if c.URL == "" {
		c.urlDerived = true
		scheme := "http"
		if c.TLSCert != "" {
			scheme = "https"
		}
		host, port, _ := net.SplitHostPort(c.Listen) // validated above
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		c.URL = scheme + "://" + net.JoinHostPort(host, port)
	}
	if err := checkURL(c.URL, false); err != nil {
		return c, bad("url", "%v", err)
	}
	c.URL = strings.TrimSuffix(c.URL, "/")
	c.DataDir = get("data-dir")
	if c.DataDir == "" {
		return c, bad("data-dir", "must not be empty")
	}
	c.EtcdEndpoints = splitList(get("etcd-endpoints"))
	for _, e := range c.EtcdEndpoints {
		if err := checkURL(e, false); err != nil {
			return c, bad("etcd-endpoints", "%q: %v", e, err)
		}
	}
	c.EtcdCA, c.EtcdCert, c.EtcdKey = get("etcd-ca"), get("etcd-cert"), get("etcd-key")
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		return c, bad("etcd-cert", "--etcd-cert and --etcd-key must be set together")
	}
	if len(c.EtcdEndpoints) == 0 && (c.EtcdCA != "" || c.EtcdCert != "") {
		return c, bad("etcd-ca", "TLS settings need --etcd-endpoints")
	}
	if s := get("auth-secret"); s != "" {
		c.AuthSecret, err = DecodeSecret(s)
		if err != nil {
			return c, bad("auth-secret", "%v", err)
		}
	}
	if c.TokenTTL, err = time.ParseDuration(get("token-ttl")); err != nil || c.TokenTTL < time.Minute || c.TokenTTL > 90*24*time.Hour {
		return c, bad("token-ttl", "%q must be a duration between 1m and 2160h", get("token-ttl"))
	}
	c.GitHubClientID, c.GitHubSecret = get("github-client-id"), get("github-client-secret")
	if (c.GitHubClientID == "") != (c.GitHubSecret == "") {
		return c, bad("github-client-id", "--github-client-id and --github-client-secret must be set together")
	}
	c.GitHubURL = strings.TrimSuffix(get("github-url"), "/")
	if err := checkURL(c.GitHubURL, false); err != nil {
		return c, bad("github-url", "%v", err)
	}
	c.GitHubAPIURL = get("github-api-url")
	if err := checkURL(c.GitHubAPIURL, false); err != nil {
		return c, bad("github-api-url", "%v", err)
	}
	if !strings.HasSuffix(c.GitHubAPIURL, "/") {
		c.GitHubAPIURL += "/"
	}
	c.Auth0Issuer, c.Auth0Audience, c.Auth0JWKSURL = get("auth0-issuer"), get("auth0-audience"), get("auth0-jwks-url")
	if c.Auth0Issuer != "" {
		if err := checkURL(c.Auth0Issuer, true); err != nil {
			return c, bad("auth0-issuer", "%v", err)
		}
		if c.Auth0Audience == "" {
			return c, bad("auth0-audience", "required when --auth0-issuer is set")
		}
		if c.Auth0JWKSURL == "" {
			base := c.Auth0Issuer
			if !strings.HasSuffix(base, "/") {
				base += "/"
			}
			c.Auth0JWKSURL = base + ".well-known/jwks.json"
		}
		if err := checkURL(c.Auth0JWKSURL, true); err != nil {
			return c, bad("auth0-jwks-url", "%v", err)
		}
	} else if c.Auth0Audience != "" || c.Auth0JWKSURL != "" {
		return c, bad("auth0-issuer", "required when --auth0-audience or --auth0-jwks-url is set")
	}
	c.Executor = get("executor")
	if c.Executor != "local" && c.Executor != "kubernetes" {
		return c, bad("executor", "%q: use local or kubernetes", c.Executor)
	}
	c.CORSOrigins = splitList(get("cors-origins"))
	for _, o := range c.CORSOrigins {
		if o == "*" {
			continue
		}
		if err := checkURL(o, false); err != nil {
			return c, bad("cors-origins", "%q: %v", o, err)
		}
	}
	if c.TrustedProxies, err = api.ParseTrustedProxies(get("trusted-proxies")); err != nil {
		return c, bad("trusted-proxies", "%v", err)
	}
	c.Kubeconfig = get("kubeconfig")
	c.KubeNamespace = get("kube-namespace")
	c.KubeNamespaces = splitList(get("kube-allowed-namespaces"))
	c.KubeClonerImage, c.KubeBuilderImage = get("kube-cloner-image"), get("kube-builder-image")
	c.KubeDefaultImage, c.KubeServiceAccount = get("kube-default-image"), get("kube-service-account")
	c.KubeNodePool = get("kube-node-pool")
	c.InternalRegistry = strings.TrimSuffix(get("internal-registry"), "/")
	if strings.Contains(c.InternalRegistry, "://") {
		return c, bad("internal-registry", "%q: give host[:port][/path], without a scheme", c.InternalRegistry)
	}
	if c.StageTimeout, err = time.ParseDuration(get("stage-timeout")); err != nil || c.StageTimeout <= 0 || c.StageTimeout > 24*time.Hour {
		return c, bad("stage-timeout", "%q must be a duration between 1s and 24h", get("stage-timeout"))
	}
	if c.PermissionTTL, err = time.ParseDuration(get("permission-ttl")); err != nil || c.PermissionTTL < time.Second || c.PermissionTTL > 24*time.Hour {
		return c, bad("permission-ttl", "%q must be a duration between 1s and 24h", get("permission-ttl"))
	}
	if c.StaleAfter, err = time.ParseDuration(get("stale-after")); err != nil || c.StaleAfter < 3*time.Second || c.StaleAfter > time.Hour {
		return c, bad("stale-after", "%q must be a duration between 3s and 1h", get("stale-after"))
	}
	for _, sw := range []struct {
		name string
		to   *bool
	}{
		{"allow-fork-builds", &c.AllowForkBuilds},
		{"notify-allow-private", &c.NotifyAllowPrivate},
		{"linearizable-reads", &c.LinearizableReads},
	} {
		if *sw.to, err = strconv.ParseBool(get(sw.name)); err != nil {
			return c, bad(sw.name, "%q: use true or false", get(sw.name))
		}
	}
	c.Path = getenv("PATH")
	c.DockerHost = getenv("DOCKER_HOST")
	c.LocalIsolation = get("local-isolation")
	switch c.LocalIsolation {
	case "auto", "bwrap", "none":
	default:
		return c, bad("local-isolation", "%q: use auto, bwrap or none", c.LocalIsolation)
	}
	c.LogLevel = get("log-level")
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return c, bad("log-level", "%q: use debug, info, warn or error", c.LogLevel)
	}
	if err := c.loadBitbucket(get, bad); err != nil {
		return c, err
	}
	if err := c.loadBitbucketDC(get, bad); err != nil {
		return c, err
	}
	if err := c.loadCluster(get, bad); err != nil {
		return c, err
	}
	if err := c.loadOAuth1(get, bad); err != nil {
		return c, err
	}
	return c, nil
}

// DecodeSecret decodes a base64 secret in the URL or standard alphabet,
// padded or not, and requires at least 32 bytes.
func DecodeSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimRight(s, "=")
	var out []byte
	var err error
	if strings.ContainsAny(s, "-_") {
		out, err = base64.RawURLEncoding.DecodeString(s)
	} else {
		out, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("not valid base64")
	}
	if len(out) < 32 {
		return nil, fmt.Errorf("decodes to %d bytes; at least 32 are required", len(out))
	}
	return out, nil
}

func checkURL(s string, allowLoopbackHTTPOnly bool) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	if allowLoopbackHTTPOnly && u.Scheme == "http" {
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%q must use https (http is allowed only for loopback)", s)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// boolText is a string flag that may be given without a value (= "true").
type boolText string

func (b *boolText) String() string     { return string(*b) }
func (b *boolText) Set(v string) error { *b = boolText(v); return nil }
func (b *boolText) IsBoolFlag() bool   { return true }
