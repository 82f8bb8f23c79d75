package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kontinuous/kontinuous/api"
	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/executor/local"
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucket"
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucketdc"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/notify"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
	swaggerui "github.com/kontinuous/kontinuous/swagger-ui"
	"github.com/kontinuous/kontinuous/web"
)

// callers resolves the authenticated identity on a request's context to
// the acting user with their forge token, refreshed when it has expired.
type callers struct {
	users pipeline.UserStore
	forge pipeline.ForgeOAuth
	// forges, when set, picks the forge of the user's id for refreshes.
	forges *pipeline.Forges
}

func (c callers) Caller(ctx context.Context) (pipeline.Caller, error) {
	id, err := auth.FromContext(ctx)
	if err != nil {
		return pipeline.Caller{}, err
	}
	tok, err := auth.GitHubToken(ctx, id, c.users)
	if err != nil {
		return pipeline.Caller{}, err
	}
	forge := c.forge
	if c.forges != nil {
		if f, ok := c.forges.ForUser(id.UserID); ok {
			forge = f
		}
	}
	if id.GitHubToken == "" && forge != nil && (tok.Expired || tok.RefreshToken != "" && !tok.Expiry.IsZero()) {
		u := pipeline.User{ID: id.UserID, Login: id.Login, Token: tok}
		if stored, gerr := c.users.GetUser(ctx, id.UserID); gerr == nil {
			u = stored
		}
		if tok, err = pipeline.FreshToken(ctx, forge, c.users, u); err != nil {
			return pipeline.Caller{}, err
		}
	}
	return pipeline.Caller{UserID: id.UserID, Login: id.Login, Token: tok}, nil
}

// Start opens everything cfg asks for and serves until Shutdown. Nothing
// is left half-started: on error, what was opened is closed.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *App, err error) {
	app := &App{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			// Best effort: the start-up error is what matters.
			_ = app.Shutdown(context.Background())
		}
	}()
	ln, tlsCfg, secret, err := app.listenAndPrepare()
	if err != nil {
		return nil, err
	}
	cfg = app.cfg // the URL may now carry the listening port
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := app.openStore(sctx, secret)
	if err != nil {
		return nil, err
	}
	fs, err := newForgeSet(cfg, log)
	if err != nil {
		return nil, err
	}
	d, err := newDomain(cfg, log, store, fs)
	if err != nil {
		return nil, err
	}
	server, builds, err := app.newAPI(ctx, sctx, secret, store, fs, d)
	if err != nil {
		return nil, err
	}
	d.engine.Start(ctx)
	app.closers = append(app.closers, d.engine.Stop)
	stopRetention, err := startRetention(cfg, store.Store, d.logs, d.exec, builds.registry, log)
	if err != nil {
		return nil, err
	}
	app.closers = append(app.closers, stopRetention)
	app.serve(ln, tlsCfg, server, builds.resources)
	log.Info("kontinuous serving", "listen", ln.Addr().String(), "url", cfg.URL, "apidocs", cfg.URL+"/apidocs/", "executor", d.exec.Name(), "version", buildVersion())
	return app, nil
}

// listenAndPrepare takes the listen address first (an occupied port is
// reported before anything is written to the data dir), creates the data
// dir, finds the auth secret and resolves a URL derived from the listen
// address to the port actually taken.
func (app *App) listenAndPrepare() (net.Listener, *tls.Config, []byte, error) {
	cfg, log := app.cfg, app.log
	ln, tlsCfg, err := listen(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	app.closers = append(app.closers, func(context.Context) error {
		// Closed by Shutdown already when serving; a second close is harmless.
		_ = ln.Close()
		return nil
	})
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("setting --data-dir (KONTINUOUS_DATA_DIR): %w", err)
	}
	secret := cfg.AuthSecret
	if secret == nil {
		if secret, err = loadOrCreateSecret(cfg.DataDir, log); err != nil {
			return nil, nil, nil, err
		}
	}
	if cfg.urlDerived {
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
		}
		host, _, _ := net.SplitHostPort(cfg.URL[len(scheme)+3:]) // built by LoadConfig
		_, port, _ := net.SplitHostPort(ln.Addr().String())      // a TCP address
		app.cfg.URL = scheme + "://" + net.JoinHostPort(host, port)
	}
	return ln, tlsCfg, secret, nil
}

// openStore connects to etcd (embedded or external) and starts the store
// with its secrets sealed by a key from secret, behind the watch-fed read
// cache (consistent reads with --linearizable-reads).
func (app *App) openStore(ctx context.Context, secret []byte) (*etcdstore.Cached, error) {
	cfg, log := app.cfg, app.log
	cli, closeEtcd, err := openEtcd(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	app.closers = append(app.closers, closeEtcd)
	box, err := secretbox.New(secret)
	if err != nil {
		return nil, fmt.Errorf("setting --auth-secret (AUTH_SECRET): %w", err)
	}
	store := etcdstore.NewCached(etcdstore.New(cli, box, etcdstore.Options{Logger: log}), etcdstore.CacheOptions{LinearizableReads: cfg.LinearizableReads})
	if err := store.Start(ctx); err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	app.closers = append(app.closers, func(context.Context) error { store.Close(); return nil })
	return store, nil
}

// forgeSet is the forges this server talks to: GitHub always, the
// Bitbucket ones when configured (nil otherwise).
type forgeSet struct {
	scm *githubscm.SCM
	bb  *bitbucket.Forge
	dc  *bitbucketdc.Forge
	reg *pipeline.Forges
}

func newForgeSet(cfg Config, log *slog.Logger) (forgeSet, error) {
	oauth, err := githubscm.NewOAuth(githubscm.OAuthConfig{ClientID: cfg.GitHubClientID, ClientSecret: cfg.GitHubSecret, WebURL: cfg.GitHubURL})
	if err != nil {
		return forgeSet{}, fmt.Errorf("setting --github-url (GITHUB_URL): %w", err)
	}
	var fs forgeSet
	fs.scm, err = githubscm.New(githubscm.Config{APIURL: cfg.GitHubAPIURL, Logger: log, OAuth: oauth, PermissionTTL: cfg.PermissionTTL})
	if err != nil {
		return forgeSet{}, fmt.Errorf("setting --github-api-url (GITHUB_API_URL): %w", err)
	}
	if fs.bb, err = newBitbucket(cfg); err != nil {
		return forgeSet{}, fmt.Errorf("Bitbucket settings: %w", err)
	}
	if fs.dc, err = newBitbucketDCForge(cfg, log); err != nil {
		return forgeSet{}, fmt.Errorf("setting --bitbucket-dc-url (BITBUCKET_DC_URL): %w", err)
	}
	fs.reg = pipeline.NewForges(fs.scm)
	if fs.bb != nil {
		fs.reg.Register(fs.bb)
	}
	if fs.dc != nil {
		fs.reg.Register(fs.dc)
	}
	return fs, nil
}

// domain is the pipeline side: logs, executor, engine and service.
type domain struct {
	logs   pipeline.LogStore
	exec   pipeline.Executor
	engine *pipeline.Engine
	svc    *pipeline.Service
}

func newDomain(cfg Config, log *slog.Logger, store *etcdstore.Cached, fs forgeSet) (domain, error) {
	logs, err := openLogs(cfg, store)
	if err != nil {
		return domain{}, err
	}
	exec, err := newExecutor(cfg, log)
	if err != nil {
		return domain{}, err
	}
	engine := pipeline.NewEngine(pipeline.EngineConfig{
		Store: store, SCM: fs.scm, Forges: fs.reg, Logs: logs, Executor: exec, PublicURL: cfg.URL, Logger: log,
		StageTimeout: cfg.StageTimeout, Namespace: namespacePolicy(cfg), StaleAfter: cfg.StaleAfter,
		Notifier:         notify.New(notify.Config{Client: notify.Client(cfg.NotifyAllowPrivate), Logger: log}),
		AllowForkBuilds:  cfg.AllowForkBuilds,
		InternalRegistry: cfg.InternalRegistry,
	})
	refusal := webhookURLProblem(cfg.URL, cfg.GitHubAPIURL)
	if refusal != "" {
		log.Warn("pipelines cannot be created: " + refusal)
	}
	svc := pipeline.NewService(pipeline.ServiceConfig{Store: store, SCM: fs.scm, Forges: fs.reg, Logs: logs, PublicURL: cfg.URL, Logger: log, Engine: engine, CreateRefusal: refusal})
	return domain{logs: logs, exec: exec, engine: engine, svc: svc}, nil
}

// buildAPI is what the server keeps of the API besides its handler.
type buildAPI struct {
	resources *api.BuildResources
	registry  *prometheus.Registry
}

// newAPI builds the authentication (tokens, logins of every forge, OAuth
// 1.0a) and the HTTP API over the domain.
func (app *App) newAPI(ctx, sctx context.Context, secret []byte, store *etcdstore.Cached, fs forgeSet, d domain) (http.Handler, buildAPI, error) {
	cfg, log := app.cfg, app.log
	vctx, vcancel := context.WithCancel(context.WithoutCancel(ctx))
	app.closers = append(app.closers, func(context.Context) error { vcancel(); return nil })
	verifier, err := auth.NewVerifier(vctx, auth.VerifierConfig{
		Secret: secret, Auth0Issuer: cfg.Auth0Issuer, Auth0Audience: cfg.Auth0Audience,
		JWKSURL: cfg.Auth0JWKSURL, Revocations: store, Logger: log,
	})
	if err != nil {
		return nil, buildAPI{}, fmt.Errorf("setting --auth0-issuer (AUTH0_ISSUER): %w", err)
	}
	login, others, err := newLogins(secret, store.Store, fs, cfg.TokenTTL)
	if err != nil {
		return nil, buildAPI{}, err
	}
	op, err := newOAuth1(sctx, cfg, store.Store, log)
	if err != nil {
		return nil, buildAPI{}, err
	}
	cl := callers{users: store, forge: fs.scm, forges: fs.reg}
	builds := api.NewBuildResources(d.svc, cl, op.Or(verifier))
	ui, err := web.New()
	if err != nil {
		return nil, buildAPI{}, err
	}
	builds.SetStreamLimits(cfg.Cluster.MaxStreamsPerUser, cfg.Cluster.MaxStreams)
	reg, err := newRegistry(cfg, store)
	if err != nil {
		return nil, buildAPI{}, err
	}
	server, err := api.New(api.Config{
		Logger: log, Version: buildVersion(), PublicURL: cfg.URL, CORSOrigins: cfg.CORSOrigins,
		Ready: store.Ready, Authenticator: op.Or(verifier), Registry: reg, TrustedProxies: cfg.TrustedProxies,
		Space: func(ctx context.Context) (api.EtcdSpace, error) {
			sp, err := store.Space(ctx)
			return api.EtcdSpace{DBSize: sp.DBSize, DBSizeInUse: sp.DBSizeInUse, Quota: sp.Quota, Alarms: sp.Alarms}, err
		},
		Resources: []api.Resource{
			api.NewLoginResources(api.LoginConfig{Login: login, Others: others, TrustedProxies: cfg.TrustedProxies, Authenticator: op.Or(verifier)}),
			api.NewUserResources(store, verifier).WithConnections(d.svc),
			api.NewForgeResources(forges(cfg)),
			api.NewPipelineResources(d.svc, cl),
			builds,
			api.NewLintResources(),
			api.NewBadgeResources(pipeline.NewBadges(d.svc)),
			oauth1Resources(op),
		},
		SwaggerUI: swaggerui.Handler(api.SpecPath),
		UI:        ui,
	})
	if err != nil {
		return nil, buildAPI{}, err
	}
	return server, buildAPI{resources: builds, registry: reg}, nil
}

// newLogins returns GitHub's login and those of the other forges on, by
// forge name; each signs its login states with its own name.
func newLogins(secret []byte, store *etcdstore.Store, fs forgeSet, ttl time.Duration) (*auth.Login, map[string]api.LoginService, error) {
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret, TTL: ttl})
	if err != nil {
		return nil, nil, err
	}
	states, err := auth.NewStates(auth.StatesConfig{Secret: secret, Once: store})
	if err != nil {
		return nil, nil, err
	}
	login, err := auth.NewLogin(auth.LoginConfig{OAuth: fs.scm, Users: store, Forge: fs.scm, Issuer: issuer, States: states.ForForge(fs.scm.Name()), Links: store})
	if err != nil {
		return nil, nil, err
	}
	others := map[string]api.LoginService{}
	for _, f := range fs.others() {
		l, err := auth.NewLogin(auth.LoginConfig{OAuth: f, Users: store, Forge: f, Issuer: issuer, States: states.ForForge(f.Name()), Links: store})
		if err != nil {
			return nil, nil, err
		}
		others[f.Name()] = l
	}
	return login, others, nil
}

// serve starts serving on ln in the background.
func (app *App) serve(ln net.Listener, tlsCfg *tls.Config, handler http.Handler, builds *api.BuildResources) {
	app.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		TLSConfig:         tlsCfg,
		ErrorLog:          slog.NewLogLogger(app.log.Handler(), slog.LevelWarn),
	}
	// Followed log streams end when shutdown begins instead of holding it.
	app.srv.RegisterOnShutdown(builds.CloseStreams)
	app.Addr = ln.Addr()
	app.URL = app.cfg.URL
	app.serveErr = make(chan error, 1)
	go func() {
		var err error
		if tlsCfg != nil {
			err = app.srv.ServeTLS(ln, "", "")
		} else {
			err = app.srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			app.serveErr <- err
		}
		close(app.serveErr)
	}()
}

func newExecutor(cfg Config, log *slog.Logger) (pipeline.Executor, error) {
	switch cfg.Executor {
	case "kubernetes":
		return newKubeExecutor(cfg, log)
	default:
		lc := local.Config{
			WorkDir: filepath.Join(cfg.DataDir, "workspaces"), DefaultTimeout: cfg.StageTimeout,
			Logger: log, Kubeconfig: cfg.Kubeconfig, Path: cfg.Path, DockerHost: cfg.DockerHost,
			// The server's key files and kubeconfig, wherever they are
			// (/etc/kontinuous/tls.key is under a shown /etc).
			Hide: []string{cfg.TLSKey, cfg.TLSCert, cfg.EtcdKey, cfg.EtcdCert, cfg.EtcdCA, cfg.Kubeconfig},
		}
		if err := localIsolation(cfg, &lc, log); err != nil {
			return nil, err
		}
		return local.New(lc), nil
	}
}

// namespacePolicy: stages run in the configured namespace; a spec may ask
// for one of the allowed ones, nothing else.
func namespacePolicy(cfg Config) func(pipeline.Pipeline, string) (string, error) {
	return func(p pipeline.Pipeline, requested string) (string, error) {
		def := cfg.KubeNamespace
		if p.Namespace != "" {
			def = p.Namespace
		}
		if requested == "" || requested == def {
			return def, nil
		}
		for _, ns := range cfg.KubeNamespaces {
			if ns == requested {
				return ns, nil
			}
		}
		return "", fmt.Errorf("metadata.namespace %q is not allowed on this server (allowed: %s; see --kube-allowed-namespaces)", requested, allowedList(def, cfg.KubeNamespaces))
	}
}

func allowedList(def string, extra []string) string {
	out := def
	for _, e := range extra {
		out += ", " + e
	}
	return out
}

// otherForge is a forge besides GitHub with its own login.
type otherForge interface {
	pipeline.ForgeOAuth
	auth.ForgeUsers
}

// others are the forges besides GitHub that are on, in a fixed order.
func (fs forgeSet) others() []otherForge {
	var out []otherForge
	if fs.bb != nil {
		out = append(out, fs.bb)
	}
	if fs.dc != nil {
		out = append(out, fs.dc)
	}
	return out
}
