package main

import (
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
	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/auth/oauth1"
	"github.com/kontinuous/kontinuous/pipeline"
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

// setting is one row of the settings table: a flag, the environment
// variables behind it, its default, its --help line and how its text
// becomes part of Config. Adding a setting is adding a row.
//
// A row without a flag is a check across the rows above it (two
// settings that go together, a value derived from another).
type setting struct {
	flag string
	// env: the first one set wins; a flag given on the command line wins
	// over all of them.
	env  []string
	def  string
	help string
	// fallback, when set, gives the value when neither the flag nor env
	// is set, before def (the original BIND_ADDR + BIND_PORT).
	fallback func(getenv func(string) string) string
	// load parses and checks the value into c. Rows load in table order,
	// so load may use the rows above. An error is this setting's unless
	// it is a *problem naming another.
	load func(c *Config, v string) error
	// check is the load of a row without a flag.
	check func(c *Config) error
}

// isSwitch: a setting whose default is "false" is a switch: --flag alone
// means true.
func (s setting) isSwitch() bool { return s.def == "false" }

// settings is the table, in the order settings are checked (--help sorts
// them by name). The forges, the cluster and OAuth 1.0a add their rows in
// their own files.
var settings = concat(coreSettings, bitbucketSettings, bitbucketDCSettings, clusterSettings, oauth1Settings)

var coreSettings = []setting{
	{flag: "listen", env: []string{"KONTINUOUS_LISTEN"}, def: "127.0.0.1:3005", help: "HTTP listen address (env also BIND_ADDR + BIND_PORT)",
		fallback: bindAddrPort, load: loadListen},
	{flag: "tls-cert", env: []string{"CERT_FILE"}, help: "TLS certificate file (HTTPS and HTTP/2 when both are set)",
		load: text(func(c *Config) *string { return &c.TLSCert })},
	{flag: "tls-key", env: []string{"KEY_FILE"}, help: "TLS key file",
		load: text(func(c *Config) *string { return &c.TLSKey })},
	{check: together("tls-cert", "tls-key", func(c *Config) (string, string) { return c.TLSCert, c.TLSKey })},
	{flag: "url", env: []string{"KONTINUOUS_URL"}, help: "public base URL; webhooks and links point here (default http://{listen})",
		load: loadURL},
	{flag: "data-dir", env: []string{"KONTINUOUS_DATA_DIR"}, def: "./kontinuous-data", help: "embedded etcd data, generated secret, workspaces, logs",
		load: func(c *Config, v string) error {
			if c.DataDir = v; v == "" {
				return errors.New("must not be empty")
			}
			return nil
		}},
	{flag: "etcd-endpoints", env: []string{"KV_ADDRESS"}, help: "comma-separated client URLs of an external etcd cluster (empty = embedded)",
		load: func(c *Config, v string) error {
			c.EtcdEndpoints = splitList(v)
			for _, e := range c.EtcdEndpoints {
				if err := checkURL(e, false); err != nil {
					return fmt.Errorf("%q: %v", e, err)
				}
			}
			return nil
		}},
	{flag: "etcd-ca", env: []string{"ETCD_CA"}, help: "CA file for TLS to an external etcd",
		load: text(func(c *Config) *string { return &c.EtcdCA })},
	{flag: "etcd-cert", env: []string{"ETCD_CERT"}, help: "client certificate for TLS to an external etcd",
		load: text(func(c *Config) *string { return &c.EtcdCert })},
	{flag: "etcd-key", env: []string{"ETCD_KEY"}, help: "client key for TLS to an external etcd",
		load: text(func(c *Config) *string { return &c.EtcdKey })},
	{check: together("etcd-cert", "etcd-key", func(c *Config) (string, string) { return c.EtcdCert, c.EtcdKey })},
	{check: func(c *Config) error {
		if len(c.EtcdEndpoints) == 0 && (c.EtcdCA != "" || c.EtcdCert != "") {
			return problemf("etcd-ca", "TLS settings need --etcd-endpoints")
		}
		return nil
	}},
	{flag: "auth-secret", env: []string{"AUTH_SECRET"}, help: "base64 shared secret (≥ 32 bytes decoded); default: generated once in the data dir",
		load: loadAuthSecret},
	{flag: "token-ttl", env: []string{"KONTINUOUS_TOKEN_TTL"}, def: "24h", help: "lifetime of JWTs the server issues",
		load: durationIn(func(c *Config) *time.Duration { return &c.TokenTTL }, time.Minute, 90*24*time.Hour, "1m and 2160h")},
	{flag: "github-client-id", env: []string{"GITHUB_CLIENT_ID"}, help: "GitHub OAuth app client id",
		load: text(func(c *Config) *string { return &c.GitHubClientID })},
	{flag: "github-client-secret", env: []string{"GITHUB_CLIENT_SECRET"}, help: "GitHub OAuth app client secret",
		load: text(func(c *Config) *string { return &c.GitHubSecret })},
	{check: together("github-client-id", "github-client-secret", func(c *Config) (string, string) { return c.GitHubClientID, c.GitHubSecret })},
	{flag: "github-url", env: []string{"GITHUB_URL"}, def: "https://github.com", help: "GitHub web base (GitHub Enterprise: its host)",
		load: baseURL(func(c *Config) *string { return &c.GitHubURL })},
	{flag: "github-api-url", env: []string{"GITHUB_API_URL"}, def: "https://api.github.com/", help: "GitHub REST base (GitHub Enterprise: https://host/api/v3/)",
		load: func(c *Config, v string) error {
			if err := checkURL(v, false); err != nil {
				return err
			}
			if c.GitHubAPIURL = v; !strings.HasSuffix(v, "/") {
				c.GitHubAPIURL += "/"
			}
			return nil
		}},
	{flag: "auth0-issuer", env: []string{"AUTH0_ISSUER"}, help: "Auth0 issuer, e.g. https://tenant.auth0.com/ (empty = Auth0 off)",
		load: func(c *Config, v string) error {
			if c.Auth0Issuer = v; v != "" {
				return checkURL(v, true)
			}
			return nil
		}},
	{flag: "auth0-audience", env: []string{"AUTH0_AUDIENCE"}, help: "required aud of Auth0 tokens",
		load: text(func(c *Config) *string { return &c.Auth0Audience })},
	{flag: "auth0-jwks-url", env: []string{"AUTH0_JWKS_URL"}, help: "Auth0 JWKS URL (default {issuer}.well-known/jwks.json)",
		load: text(func(c *Config) *string { return &c.Auth0JWKSURL })},
	{check: checkAuth0},
	{flag: "executor", env: []string{"KONTINUOUS_EXECUTOR"}, def: "local", help: "where stages run: local or kubernetes",
		load: oneOf(func(c *Config) *string { return &c.Executor }, "local", "kubernetes")},
	{flag: "cors-origins", env: []string{"KONTINUOUS_CORS_ORIGINS"}, help: "comma-separated origins a browser UI may call from (default: the --url origin)",
		load: func(c *Config, v string) error {
			c.CORSOrigins = splitList(v)
			for _, o := range c.CORSOrigins {
				if err := checkURL(o, false); o != "*" && err != nil {
					return fmt.Errorf("%q: %v", o, err)
				}
			}
			return nil
		}},
	{flag: "trusted-proxies", env: []string{"KONTINUOUS_TRUSTED_PROXIES"}, help: "comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed for the login rate limit and request log (empty = the TCP peer is the client)",
		load: func(c *Config, v string) (err error) {
			c.TrustedProxies, err = api.ParseTrustedProxies(v)
			return err
		}},
	{flag: "kubeconfig", env: []string{"KUBECONFIG"}, help: "kubeconfig for the kubernetes executor and deploy stages (empty = in-cluster)",
		load: text(func(c *Config) *string { return &c.Kubeconfig })},
	{flag: "kube-namespace", env: []string{"KONTINUOUS_NAMESPACE"}, def: "default", help: "namespace stage Jobs run in (kubernetes executor)",
		load: text(func(c *Config) *string { return &c.KubeNamespace })},
	{flag: "kube-allowed-namespaces", env: []string{"KONTINUOUS_ALLOWED_NAMESPACES"}, help: "extra namespaces a .pipeline.yml may ask for (comma-separated)",
		load: func(c *Config, v string) error { c.KubeNamespaces = splitList(v); return nil }},
	{flag: "kube-cloner-image", env: []string{"KONTINUOUS_KUBE_CLONER_IMAGE"}, help: "image with git and sh that clones the commit in stage pods (default alpine/git)",
		load: text(func(c *Config) *string { return &c.KubeClonerImage })},
	{flag: "kube-builder-image", env: []string{"KONTINUOUS_KUBE_BUILDER_IMAGE"}, help: "daemonless image builder for docker_build/docker_publish (default kaniko's executor)",
		load: text(func(c *Config) *string { return &c.KubeBuilderImage })},
	{flag: "kube-default-image", env: []string{"KONTINUOUS_KUBE_DEFAULT_IMAGE"}, help: "image of command stages that name none and follow no docker_build (default alpine)",
		load: text(func(c *Config) *string { return &c.KubeDefaultImage })},
	{flag: "kube-service-account", env: []string{"KONTINUOUS_KUBE_SERVICE_ACCOUNT"}, help: "service account stage pods run as (default: the namespace's default; no API token is mounted)",
		load: text(func(c *Config) *string { return &c.KubeServiceAccount })},
	{flag: "kube-node-pool", env: []string{"KONTINUOUS_KUBE_NODE_POOL"}, help: "key=value: stage pods run only on nodes with this label and tolerate the taint key=value:NoSchedule (kubernetes executor)",
		load: text(func(c *Config) *string { return &c.KubeNodePool })},
	{flag: "internal-registry", env: []string{"KONTINUOUS_INTERNAL_REGISTRY"}, help: "registry host[/path] docker_publish pushes to when a stage names no external_registry",
		load: func(c *Config, v string) error {
			if c.InternalRegistry = strings.TrimSuffix(v, "/"); strings.Contains(c.InternalRegistry, "://") {
				return fmt.Errorf("%q: give host[:port][/path], without a scheme", c.InternalRegistry)
			}
			return nil
		}},
	// Any positive stage timeout is taken; the message asks for 1s.
	{flag: "stage-timeout", env: []string{"KONTINUOUS_STAGE_TIMEOUT"}, def: "1h", help: "default timeout of a stage without one in its spec",
		load: durationIn(func(c *Config) *time.Duration { return &c.StageTimeout }, time.Nanosecond, 24*time.Hour, "1s and 24h")},
	{flag: "permission-ttl", env: []string{"KONTINUOUS_PERMISSION_TTL"}, def: "30s", help: "how long a user's forge permission on a repository is reused before it is asked again (reads keep working from it while the forge is down)",
		load: durationIn(func(c *Config) *time.Duration { return &c.PermissionTTL }, time.Second, 24*time.Hour, "1s and 24h")},
	{flag: "stale-after", env: []string{"KONTINUOUS_STALE_AFTER"}, def: "45s", help: "a running build whose server has not been heard from for this long is taken over by another (or a restarted) server",
		load: durationIn(func(c *Config) *time.Duration { return &c.StaleAfter }, 3*time.Second, time.Hour, "3s and 1h")},
	{flag: "allow-fork-builds", env: []string{"KONTINUOUS_ALLOW_FORK_BUILDS"}, def: "false", help: "run pull requests from forks on the local executor (untrusted code on this host; the kubernetes executor always runs them, without secrets)",
		load: boolean(func(c *Config) *bool { return &c.AllowForkBuilds })},
	{flag: "notify-allow-private", env: []string{"KONTINUOUS_NOTIFY_ALLOW_PRIVATE"}, def: "false", help: "let Slack notifications use plain http and private, loopback or link-local addresses (off: https to public addresses only)",
		load: boolean(func(c *Config) *bool { return &c.NotifyAllowPrivate })},
	{flag: "linearizable-reads", env: []string{"KONTINUOUS_LINEARIZABLE_READS"}, def: "false", help: "consistent reads: each build/pipeline read takes etcd's current revision (one cheap round trip) and waits for the watch-fed cache to reach it (a read on one server then sees a write another server just answered)",
		load: boolean(func(c *Config) *bool { return &c.LinearizableReads })},
	{flag: "local-isolation", env: []string{"KONTINUOUS_LOCAL_ISOLATION"}, def: "auto", help: "sandbox of local command stages: auto (bwrap if it works here, else command stages are refused), bwrap (refuse to start without it) or none (stages can read the server's secrets: push access = server access)",
		load: oneOf(func(c *Config) *string { return &c.LocalIsolation }, "auto", "bwrap", "none")},
	{flag: "log-level", env: []string{"KONTINUOUS_LOG_LEVEL"}, def: "info", help: "debug, info, warn or error",
		load: oneOf(func(c *Config) *string { return &c.LogLevel }, "debug", "info", "warn", "error")},
}

// problem is a load or check error that names the setting at fault.
type problem struct{ flag, msg string }

func (p *problem) Error() string { return p.msg }

func problemf(flag, format string, a ...any) error {
	return &problem{flag: flag, msg: fmt.Sprintf(format, a...)}
}

// settingError names the setting that is wrong.
type settingError struct {
	flag, env, msg string
}

func (e *settingError) Error() string {
	return fmt.Sprintf("setting --%s (%s): %s", e.flag, e.env, e.msg)
}

// LoadConfig reads args (without the program name) and the environment
// through getenv; a flag wins over its environment variable. The first bad
// setting, in table order, is the error: one line naming it.
func LoadConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	given, err := parseFlags(args, stderr)
	if err != nil {
		return Config{}, err
	}
	byFlag := map[string]setting{}
	for _, s := range settings {
		byFlag[s.flag] = s
	}
	var c Config
	for _, s := range settings {
		err := s.apply(&c, given, getenv)
		if err != nil {
			return Config{}, nameSetting(s, err, byFlag)
		}
	}
	c.Path = getenv("PATH")
	c.DockerHost = getenv("DOCKER_HOST")
	return c, nil
}

// parseFlags parses args into the values of the flags given. A bad flag
// gets one line (main prints it); --help prints the full list to stderr.
func parseFlags(args []string, stderr io.Writer) (map[string]string, error) {
	fs := flag.NewFlagSet("kontinuous", flag.ContinueOnError)
	vals := map[string]*string{}
	for _, s := range settings {
		if s.flag == "" {
			continue
		}
		usage := fmt.Sprintf("%s (env %s, default %q)", s.help, strings.Join(s.env, ", "), s.def)
		v := new(string)
		if s.isSwitch() {
			fs.Var((*boolText)(v), s.flag, usage)
		} else {
			fs.StringVar(v, s.flag, "", usage)
		}
		vals[s.flag] = v
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: kontinuous [healthcheck] [--setting value ...] | lint [file|-] | version; each setting is also an environment variable:")
			fs.PrintDefaults()
			return nil, err
		}
		return nil, fmt.Errorf("%v (kontinuous --help lists the settings)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (settings are flags like --listen; see --help)", fs.Arg(0))
	}
	given := map[string]string{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = *vals[f.Name] })
	return given, nil
}

// apply loads the row's value into c (or runs its check).
func (s setting) apply(c *Config, given map[string]string, getenv func(string) string) error {
	if s.flag == "" {
		return s.check(c)
	}
	return s.load(c, s.value(given, getenv))
}

// value is the flag if given, else the first environment variable set,
// else the fallback's, else the default.
func (s setting) value(given map[string]string, getenv func(string) string) string {
	if v, ok := given[s.flag]; ok {
		return v
	}
	for _, e := range s.env {
		if v := getenv(e); v != "" {
			return v
		}
	}
	if s.fallback != nil {
		if v := s.fallback(getenv); v != "" {
			return v
		}
	}
	return s.def
}

// nameSetting turns a row's error into one line per problem, each naming
// its setting and environment variables.
func nameSetting(s setting, err error, byFlag map[string]setting) error {
	if errs, ok := err.(interface{ Unwrap() []error }); ok {
		var lines []error
		for _, e := range errs.Unwrap() {
			lines = append(lines, nameSetting(s, e, byFlag))
		}
		return errors.Join(lines...)
	}
	name, msg := s.flag, err.Error()
	var p *problem
	if errors.As(err, &p) {
		name, msg = p.flag, p.msg
	}
	return &settingError{flag: name, env: strings.Join(byFlag[name].env, ", "), msg: msg}
}

// concat joins the parts of the settings table.
func concat(parts ...[]setting) []setting {
	var out []setting
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// text is the load of a setting taken as it is.
func text(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *field(c) = v; return nil }
}

// baseURL is the load of an http(s) URL kept without a trailing slash.
func baseURL(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = strings.TrimSuffix(v, "/")
		return checkURL(*field(c), false)
	}
}

// oneOf is the load of a setting with a fixed set of values.
func oneOf(field func(*Config) *string, choices ...string) func(*Config, string) error {
	list := strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
	return func(c *Config, v string) error {
		*field(c) = v
		for _, ch := range choices {
			if v == ch {
				return nil
			}
		}
		return fmt.Errorf("%q: use %s", v, list)
	}
}

// durationIn is the load of a duration in [min, max]; between is how the
// error words the range.
func durationIn(field func(*Config) *time.Duration, min, max time.Duration, between string) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < min || d > max {
			return fmt.Errorf("%q must be a duration between %s", v, between)
		}
		*field(c) = d
		return nil
	}
}

// wholeIn is the load of a whole number in [min, max]; between is how
// the error words the range.
func wholeIn(field func(*Config) *int, min, max int, between string) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min || n > max {
			return fmt.Errorf("%q must be a whole number between %s", v, between)
		}
		*field(c) = n
		return nil
	}
}

// boolean is the load of a switch.
func boolean(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q: use true or false", v)
		}
		*field(c) = b
		return nil
	}
}

// together is the check that two settings are both set or both unset.
func together(a, b string, values func(*Config) (string, string)) func(*Config) error {
	return func(c *Config) error {
		if va, vb := values(c); (va == "") != (vb == "") {
			return problemf(a, "--%s and --%s must be set together", a, b)
		}
		return nil
	}
}

// bindAddrPort is the original BIND_ADDR + BIND_PORT listen address
// ("" when neither is set).
func bindAddrPort(getenv func(string) string) string {
	addr, port := getenv("BIND_ADDR"), getenv("BIND_PORT")
	if addr == "" && port == "" {
		return ""
	}
	if addr == "" {
		addr = "127.0.0.1"
	}
	if port == "" {
		port = "3005"
	}
	return net.JoinHostPort(addr, port)
}

// loadListen takes host:port; any host, including empty (all
// interfaces), is allowed.
func loadListen(c *Config, v string) error {
	c.Listen = v
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return fmt.Errorf("%q is not host:port", v)
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q has a bad port", v)
	}
	return nil
}

// loadURL takes the public URL, by default the listen address's (a port
// of 0 is resolved once listening).
func loadURL(c *Config, v string) error {
	if v == "" {
		c.urlDerived = true
		scheme := "http"
		if c.TLSCert != "" {
			scheme = "https"
		}
		host, port, _ := net.SplitHostPort(c.Listen) // checked by its row
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		v = scheme + "://" + net.JoinHostPort(host, port)
	}
	if err := checkURL(v, false); err != nil {
		return err
	}
	c.URL = strings.TrimSuffix(v, "/")
	return nil
}

// loadAuthSecret decodes the shared secret (auth.DecodeSecret); empty:
// generated or kept in the data dir.
func loadAuthSecret(c *Config, v string) error {
	if v == "" {
		return nil
	}
	secret, err := auth.DecodeSecret(v)
	if err != nil {
		var ie *pipeline.InvalidError
		if errors.As(err, &ie) {
			return errors.New(ie.Reason) // the error already names the setting
		}
		return err
	}
	c.AuthSecret = secret
	return nil
}

// checkAuth0: Auth0 needs an issuer with an audience; the JWKS URL
// defaults to the issuer's.
func checkAuth0(c *Config) error {
	if c.Auth0Issuer == "" {
		if c.Auth0Audience != "" || c.Auth0JWKSURL != "" {
			return problemf("auth0-issuer", "required when --auth0-audience or --auth0-jwks-url is set")
		}
		return nil
	}
	if c.Auth0Audience == "" {
		return problemf("auth0-audience", "required when --auth0-issuer is set")
	}
	if c.Auth0JWKSURL == "" {
		base := c.Auth0Issuer
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
		c.Auth0JWKSURL = base + ".well-known/jwks.json"
	}
	if err := checkURL(c.Auth0JWKSURL, true); err != nil {
		return &problem{flag: "auth0-jwks-url", msg: err.Error()}
	}
	return nil
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
