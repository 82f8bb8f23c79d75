package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kontinuous/kontinuous/api"
	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/executor/local"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
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
	// The listen address first: an occupied port is reported before
	// anything is written to the data dir.
	ln, tlsCfg, err := listen(cfg)
	if err != nil {
		return nil, err
	}
	app.closers = append(app.closers, func(context.Context) error {
		// Closed by Shutdown already when serving; a second close is harmless.
		_ = ln.Close()
		return nil
	})
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("setting --data-dir (KONTINUOUS_DATA_DIR): %w", err)
	}
	secret := cfg.AuthSecret
	if secret == nil {
		if secret, err = loadOrCreateSecret(cfg.DataDir, log); err != nil {
			return nil, err
		}
	}
	if cfg.urlDerived {
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
		}
		host, _, _ := net.SplitHostPort(cfg.URL[len(scheme)+3:]) // built by LoadConfig
		_, port, _ := net.SplitHostPort(ln.Addr().String())      // a TCP address
		cfg.URL = scheme + "://" + net.JoinHostPort(host, port)
		app.cfg = cfg
	}

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli, closeEtcd, err := openEtcd(sctx, cfg, log)
	if err != nil {
		return nil, err
	}
	app.closers = append(app.closers, closeEtcd)
	box, err := secretbox.New(secret)
	if err != nil {
		return nil, fmt.Errorf("setting --auth-secret (AUTH_SECRET): %w", err)
	}
	store := etcdstore.New(cli, box, etcdstore.Options{Logger: log, LinearizableReads: cfg.LinearizableReads})
	if err := store.Start(sctx); err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	app.closers = append(app.closers, func(context.Context) error { store.Close(); return nil })

	oauth, err := githubscm.NewOAuth(githubscm.OAuthConfig{ClientID: cfg.GitHubClientID, ClientSecret: cfg.GitHubSecret, WebURL: cfg.GitHubURL})
	if err != nil {
		return nil, fmt.Errorf("setting --github-url (GITHUB_URL): %w", err)
	}
	scm, err := githubscm.New(githubscm.Config{APIURL: cfg.GitHubAPIURL, Logger: log, OAuth: oauth, PermissionTTL: cfg.PermissionTTL})
	if err != nil {
		return nil, fmt.Errorf("setting --github-api-url (GITHUB_API_URL): %w", err)
	}
	bb, err := newBitbucket(cfg)
	if err != nil {
		return nil, fmt.Errorf("Bitbucket settings: %w", err)
	}
	dc, err := newBitbucketDCForge(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("setting --bitbucket-dc-url (BITBUCKET_DC_URL): %w", err)
	}
	forgeReg := pipeline.NewForges(scm)
	if bb != nil {
		forgeReg.Register(bb)
	}
	if dc != nil {
		forgeReg.Register(dc)
	}
	logs, err := openLogs(cfg, store)
	if err != nil {
		return nil, err
	}
	exec, err := newExecutor(cfg, log)
	if err != nil {
		return nil, err
	}
	engine := pipeline.NewEngine(pipeline.EngineConfig{
		Store: store, SCM: scm, Forges: forgeReg, Logs: logs, Executor: exec, PublicURL: cfg.URL, Logger: log,
		StageTimeout: cfg.StageTimeout, Namespace: namespacePolicy(cfg), StaleAfter: cfg.StaleAfter,
		HTTPClient: notifyClient(cfg.NotifyAllowPrivate), AllowForkBuilds: cfg.AllowForkBuilds,
		InternalRegistry: cfg.InternalRegistry,
	})
	refusal := webhookURLProblem(cfg.URL, cfg.GitHubAPIURL)
	if refusal != "" {
		log.Warn("pipelines cannot be created: " + refusal)
	}
	svc := pipeline.NewService(pipeline.ServiceConfig{Store: store, SCM: scm, Forges: forgeReg, Logs: logs, PublicURL: cfg.URL, Logger: log, Engine: engine, CreateRefusal: refusal})

	vctx, vcancel := context.WithCancel(context.WithoutCancel(ctx))
	app.closers = append(app.closers, func(context.Context) error { vcancel(); return nil })
	verifier, err := auth.NewVerifier(vctx, auth.VerifierConfig{
		Secret: secret, Auth0Issuer: cfg.Auth0Issuer, Auth0Audience: cfg.Auth0Audience,
		JWKSURL: cfg.Auth0JWKSURL, Revocations: store, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("setting --auth0-issuer (AUTH0_ISSUER): %w", err)
	}
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret, TTL: cfg.TokenTTL})
	if err != nil {
		return nil, err
	}
	states, err := auth.NewStates(auth.StatesConfig{Secret: secret, Once: store})
	if err != nil {
		return nil, err
	}
	login, err := auth.NewLogin(auth.LoginConfig{OAuth: scm, Users: store, Forge: scm, Issuer: issuer, States: states.ForForge(scm.Name()), Links: store})
	if err != nil {
		return nil, err
	}
	others := map[string]api.LoginService{}
	if bb != nil {
		bbLogin, err := auth.NewLogin(auth.LoginConfig{OAuth: bb, Users: store, Forge: bb, Issuer: issuer, States: states.ForForge(bb.Name()), Links: store})
		if err != nil {
			return nil, err
		}
		others[bb.Name()] = bbLogin
	}
	if dc != nil {
		dcLogin, err := auth.NewLogin(auth.LoginConfig{OAuth: dc, Users: store, Forge: dc, Issuer: issuer, States: states.ForForge(dc.Name()), Links: store})
		if err != nil {
			return nil, err
		}
		others[dc.Name()] = dcLogin
	}
	op, err := newOAuth1(sctx, cfg, store, log)
	if err != nil {
		return nil, err
	}
	cl := callers{users: store, forge: scm, forges: forgeReg}
	builds := api.NewBuildResources(svc, cl, op.Or(verifier))
	ui, err := web.New()
	if err != nil {
		return nil, err
	}
	builds.SetStreamLimits(cfg.Cluster.MaxStreamsPerUser, cfg.Cluster.MaxStreams)
	reg, err := newRegistry(cfg, store)
	if err != nil {
		return nil, err
	}
	server, err := api.New(api.Config{
		Logger: log, Version: buildVersion(), PublicURL: cfg.URL, CORSOrigins: cfg.CORSOrigins,
		Ready: store.Ready, Authenticator: op.Or(verifier), Registry: reg, TrustedProxies: cfg.TrustedProxies,
		Resources: []api.Resource{
			api.NewLoginResources(api.LoginConfig{Login: login, Others: others, TrustedProxies: cfg.TrustedProxies, Authenticator: op.Or(verifier)}),
			api.NewUserResources(store, verifier),
			api.NewForgeResources(forges(cfg)),
			api.NewPipelineResources(svc, cl),
			builds,
			api.NewLintResources(),
			api.NewBadgeResources(pipeline.NewBadges(svc)),
			oauth1Resources(op),
		},
		SwaggerUI: swaggerui.Handler(api.SpecPath),
		UI:        ui,
	})
	if err != nil {
		return nil, err
	}
	engine.Start(ctx)
	app.closers = append(app.closers, engine.Stop)
	stopRetention, err := startRetention(cfg, store, logs, exec, reg, log)
	if err != nil {
		return nil, err
	}
	app.closers = append(app.closers, stopRetention)

	app.srv = &http.Server{
		Handler:           server,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		TLSConfig:         tlsCfg,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Followed log streams end when shutdown begins instead of holding it.
	app.srv.RegisterOnShutdown(builds.CloseStreams)
	app.Addr = ln.Addr()
	app.URL = cfg.URL
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
	log.Info("kontinuous serving", "listen", ln.Addr().String(), "url", cfg.URL, "apidocs", cfg.URL+"/apidocs/", "executor", exec.Name(), "version", buildVersion())
	return app, nil
}

func newExecutor(cfg Config, log *slog.Logger) (pipeline.Executor, error) {
	switch cfg.Executor {
	case "kubernetes":
		return newKubeExecutor(cfg, log)
	default:
		lc := local.Config{
			WorkDir: filepath.Join(cfg.DataDir, "workspaces"), DefaultTimeout: cfg.StageTimeout,
			Logger: log, Kubeconfig: cfg.Kubeconfig, Path: cfg.Path, DockerHost: cfg.DockerHost,
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
