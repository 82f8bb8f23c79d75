package pipeline

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// SpecPath is where a repository keeps its pipeline definition.
const SpecPath = ".pipeline.yml"

// Caller is the user acting on the API, with the forge token their calls
// use.
type Caller struct {
	UserID string
	Login  string
	Token  ForgeToken
	// granted is the access Authorize found; nil until it is called.
	granted *grant
}

// grant records that a caller was found to hold perm on owner/repo's
// pipeline. Only Authorize makes one, so a Caller built by anyone else
// carries none and gets the full check.
type grant struct {
	owner, repo string
	perm        Permission
	// pipeline is the stored pipeline the check read (nil when none is
	// stored under that name): the rest of the request picks its forge
	// and reads it from here, so that a request reads it once.
	pipeline *Pipeline
}

// covers reports whether g allows need on owner/repo (names match
// case-insensitively, as on the forges).
func (g *grant) covers(owner, repo string, need Permission) bool {
	return g != nil && g.perm >= need && strings.EqualFold(g.owner, owner) && strings.EqualFold(g.repo, repo)
}

// ServiceConfig wires the use cases.
type ServiceConfig struct {
	Store Store
	// SCM is the default forge: pipelines of users without a forge
	// prefix live on it.
	SCM Forge
	// Forges, when set, is the registry of every enabled forge (SCM
	// first); a caller's forge is the one their user id names.
	Forges *Forges
	Logs   LogStore
	// PublicURL is the server's base URL (webhook target, links).
	PublicURL string
	Logger    *slog.Logger
	// Engine runs builds; nil until builds are wired.
	Engine *Engine
	// CreateRefusal, when set, is why no pipeline can be created on this
	// server (e.g. its public URL is one the forge cannot reach):
	// CreatePipeline answers it (409) before any forge call.
	CreateRefusal string
}

// Service holds the use cases behind the API: authorization against the
// forge, pipeline lifecycle, definitions, secrets, builds.
type Service struct {
	cfg    ServiceConfig
	log    *slog.Logger
	forges *Forges
}

// NewService returns the use cases.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	return &Service{cfg: cfg, log: cfg.Logger, forges: cfg.forges()}
}

// Name rules every forge's names meet (a forge adds its own, see
// Forge.ValidateRepoName): owner and repo 1–100 of [A-Za-z0-9._-], not
// starting with "-" and not "." or "..", so that they are safe as path
// segments and store keys.
var (
	nameRe = regexp.MustCompile(`^[A-Za-z0-9._][A-Za-z0-9._-]{0,99}$`)
	// secretNameRe is a Kubernetes Secret name (DNS-1123 subdomain, short).
	secretNameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)
	envKeyRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	// refRe is a conservative git ref name.
	refRe = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,255}$`)
)

// ValidateRepoName checks owner and repo against the rules every forge's
// names meet; the service also applies the forge's own
// (Service.ValidateRepoName).
func ValidateRepoName(owner, repo string) error {
	if !nameRe.MatchString(owner) || owner == "." || owner == ".." {
		return Invalid("owner", "%q is not a valid owner name", owner)
	}
	if !nameRe.MatchString(repo) || repo == "." || repo == ".." {
		return Invalid("repo", "%q is not a valid repository name", repo)
	}
	return nil
}

// ValidateRepoName checks owner and repo against the forge's rules and
// the common ones.
func (s *Service) ValidateRepoName(owner, repo string) error {
	if f := s.forges.Default(); f != nil {
		if err := f.ValidateRepoName(owner, repo); err != nil {
			return err
		}
	}
	return ValidateRepoName(owner, repo)
}

// Forges is the registry of the forges the service talks to.
// A nil Service has none.
func (s *Service) Forges() *Forges {
	if s == nil {
		return NewForges()
	}
	return s.forges
}

// ValidateRef checks a branch, tag or SHA name.
func ValidateRef(field, ref string) error {
	if !refRe.MatchString(ref) || strings.Contains(ref, "..") || strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") || strings.HasPrefix(ref, "-") {
		return Invalid(field, "%q is not a valid git ref", ref)
	}
	return nil
}

// Authorize checks once that the caller may act with need on the pipeline
// owner/repo (the permission a route declares; the API checks it in a
// filter before the handler runs) and returns the caller carrying that
// grant. The Service's methods take a grant that covers what they need
// without asking the forge again; a caller without one (any other user of
// the Service) gets the full check there, so nothing is reachable
// unchecked. Errors as authorize's.
//
// The grant also carries the stored pipeline the check read: the methods
// that choose the forge to act on (a pipeline on a linked forge is acted
// on as the linked account) or need the pipeline itself take it from
// there, so that a request authorized here reads the pipeline once.
func (s *Service) Authorize(ctx context.Context, c Caller, owner, repo string, need Permission) (Caller, error) {
	stored, err := s.authorizeAccess(ctx, c, owner, repo, need, true)
	if err != nil {
		return c, err
	}
	c.granted = &grant{owner: owner, repo: repo, perm: need, pipeline: stored}
	return c, nil
}

// pipelineOf returns the stored pipeline owner/repo: the one Authorize
// read when c's grant is for it, else a fresh read.
func (s *Service) pipelineOf(ctx context.Context, c Caller, owner, repo string) (Pipeline, error) {
	if g := c.granted; g.covers(owner, repo, PermNone) {
		if g.pipeline == nil {
			return Pipeline{}, Errorf(ErrNotFound, "pipeline %s/%s not found", owner, repo)
		}
		return *g.pipeline, nil
	}
	return s.cfg.Store.GetPipeline(ctx, owner, repo)
}

// authorize returns ErrNotFound when the caller cannot see the repository
// (never revealing it exists) and ErrForbidden when they can see it but
// lack need. A grant from Authorize that covers need answers at once.
func (s *Service) authorize(ctx context.Context, c Caller, owner, repo string, need Permission) error {
	if c.granted.covers(owner, repo, need) {
		return nil
	}
	_, err := s.authorizeAccess(ctx, c, owner, repo, need, true)
	return err
}

// authorizeRepo is authorize on the repository alone, whatever pipeline
// of that name is stored.
func (s *Service) authorizeRepo(ctx context.Context, c Caller, owner, repo string, need Permission) error {
	_, err := s.authorizeAccess(ctx, c, owner, repo, need, false)
	return err
}

// authorizeAccess is the full check. With checkID it reads the stored
// pipeline owner/repo once, acts on its forge (see onPipeline) and checks
// that the repository is the one it was created for; it returns what it
// read (nil when no pipeline is stored under that name).
func (s *Service) authorizeAccess(ctx context.Context, c Caller, owner, repo string, need Permission, checkID bool) (*Pipeline, error) {
	if err := s.ValidateRepoName(owner, repo); err != nil {
		return nil, err
	}
	if !c.Token.Valid() {
		return nil, s.noToken(c)
	}
	var stored *Pipeline
	if checkID {
		sp, err := s.cfg.Store.GetPipeline(ctx, owner, repo)
		switch {
		case err == nil:
			stored = &sp
			if c, err = s.onPipeline(ctx, c, sp); err != nil {
				return nil, err
			}
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	p, id, err := s.repoAccess(ctx, c, owner, repo)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, Errorf(ErrNotFound, "pipeline %s/%s not found", owner, repo)
		}
		return nil, err
	}
	if p == PermNone {
		return nil, Errorf(ErrNotFound, "pipeline %s/%s not found", owner, repo)
	}
	// Access is to the repository the pipeline was created for, not to
	// whichever one holds its name today. A pipeline on another forge
	// than the caller's is not theirs to see (the same name may exist on
	// both forges).
	if stored != nil && (!sameRepository(*stored, id) || !s.sameForge(*stored, c)) {
		return nil, Errorf(ErrNotFound, "pipeline %s/%s not found", owner, repo)
	}
	if p < need {
		return nil, Errorf(ErrForbidden, "this needs %s access to %s/%s; you have %s", need, owner, repo, p)
	}
	return stored, nil
}

// noToken is the 401 for a caller with no forge token: where to get one.
func (s *Service) noToken(c Caller) error {
	f := ForgeOf(s.forges, c.UserID)
	if f == "" {
		return Errorf(ErrUnauthorized, "no forge token for this user, and this server has no forge; see README \"Settings\"")
	}
	return Errorf(ErrUnauthorized, "no %s token for this user: sign in again through /api/v1/login/%s/authorize (API clients: use a token that carries one, see scripts/jwt-gen)", f, f)
}

// Repositories lists the caller's forge repositories.
func (s *Service) Repositories(ctx context.Context, c Caller) ([]Repository, error) {
	if !c.Token.Valid() {
		return nil, s.noToken(c)
	}
	return s.scm(c.UserID).Repositories(ctx, c.Token)
}

// Repository returns one of the caller's repositories.
func (s *Service) Repository(ctx context.Context, c Caller, owner, name string) (Repository, error) {
	if err := s.authorizeRepo(ctx, c, owner, name, PermRead); err != nil {
		if errors.Is(err, ErrNotFound) {
			return Repository{}, Errorf(ErrNotFound, "repository %s/%s not found", owner, name)
		}
		return Repository{}, err
	}
	return s.scm(c.UserID).Repository(ctx, c.Token, owner, name)
}

// ListPipelines returns the pipelines the caller can read.
func (s *Service) ListPipelines(ctx context.Context, c Caller) ([]Pipeline, error) {
	all, err := s.cfg.Store.ListPipelines(ctx)
	if err != nil {
		return nil, err
	}
	if !c.Token.Valid() {
		return nil, s.noToken(c)
	}
	visible := make([]bool, len(all))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	// The caller as they act on each forge they are linked to.
	views := map[string]*Caller{}
	for i := range all {
		c := c
		if !s.sameForge(all[i], c) {
			forge := ForgeOf(s.forges, all[i].OwnerUserID)
			v, seen := views[forge]
			if !seen {
				// A linked connection that expired hides its pipelines
				// (GET /api/v1/user shows it as expired).
				if lv, ok, err := s.on(ctx, c, forge); err == nil && ok {
					v = &lv
				} else if err != nil && !errors.Is(err, ErrUnauthorized) {
					return nil, err
				}
				views[forge] = v
			}
			if v == nil {
				continue // a caller with no connection to its forge does not see it
			}
			c = *v
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p, id, err := s.repoAccess(ctx, c, all[i].Owner, all[i].Repo)
			if err != nil && !errors.Is(err, ErrNotFound) {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			visible[i] = err == nil && p >= PermRead && sameRepository(all[i], id)
			if err == nil && orphanedFor(all[i], c, p, id) {
				// Shown as orphaned, with nothing stored with it.
				all[i] = orphanView(all[i])
				visible[i] = true
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	out := make([]Pipeline, 0, len(all))
	for i, p := range all {
		if visible[i] {
			out = append(out, p)
		}
	}
	return out, nil
}

// NewPipeline is the body of a create request.
type NewPipeline struct {
	Owner  string   `json:"owner"`
	Repo   string   `json:"repo"`
	Events []string `json:"events"`
	Login  string   `json:"login"`
	// Forge: "" = the caller's forge; otherwise it must be the caller's.
	Forge string `json:"forge,omitempty"`
}

// creatorOn is the caller who creates a pipeline on forge: the caller
// themselves for "" or their own forge, otherwise their linked account
// there (the pipeline's owner, whose token its builds use).
func (s *Service) creatorOn(ctx context.Context, c Caller, forge string) (Caller, error) {
	if forge == "" || forge == ForgeOf(s.forges, c.UserID) {
		return c, nil
	}
	if _, ok := s.forges.Get(forge); !ok {
		return c, Invalid("forge", "%q is not a forge this server has enabled (%s)", forge, strings.Join(s.forges.Names(), ", "))
	}
	v, ok, err := s.on(ctx, c, forge)
	if err != nil {
		return c, err
	}
	if !ok {
		return c, Errorf(ErrUnauthorized, "you are not connected to %s: connect it through /api/v1/login/%s/authorize with your token (or sign in there) to create its pipelines", forge, forge)
	}
	return v, nil
}

// CreatePipeline wires a repository: admin check, webhook, read-only
// deploy key, then the stored pipeline. If any step fails, earlier ones
// are undone and nothing is stored. Created through the caller's linked
// account, it is stored only while that link exists: a Disconnect of it
// meanwhile makes the create ErrConflict (see whileLinked).
func (s *Service) CreatePipeline(ctx context.Context, c Caller, req NewPipeline) (Pipeline, error) {
	if s.cfg.CreateRefusal != "" {
		return Pipeline{}, Errorf(ErrConflict, "%s", s.cfg.CreateRefusal)
	}
	if err := s.ValidateRepoName(req.Owner, req.Repo); err != nil {
		return Pipeline{}, err
	}
	events, err := normalizeEvents(req.Events)
	if err != nil {
		return Pipeline{}, err
	}
	caller := c
	if c, err = s.creatorOn(ctx, c, req.Forge); err != nil {
		return Pipeline{}, err
	}
	linked := c.UserID != caller.UserID
	if err := s.authorizeRepo(ctx, c, req.Owner, req.Repo, PermAdmin); err != nil {
		return Pipeline{}, err
	}
	if old, err := s.cfg.Store.GetPipeline(ctx, req.Owner, req.Repo); err == nil {
		if _, id, aerr := s.repoAccess(ctx, c, req.Owner, req.Repo); aerr == nil && !sameRepository(old, id) {
			return Pipeline{}, Errorf(ErrConflict, "a pipeline created for an earlier repository named %s/%s still exists (orphaned); its creator or an admin of this repository can delete it (DELETE /api/v1/pipelines/%s/%s) to free the name", req.Owner, req.Repo, req.Owner, req.Repo)
		}
		return Pipeline{}, Errorf(ErrConflict, "pipeline %s/%s already exists", req.Owner, req.Repo)
	} else if !errors.Is(err, ErrNotFound) {
		return Pipeline{}, err
	}
	repo, err := s.scm(c.UserID).Repository(ctx, c.Token, req.Owner, req.Repo)
	if err != nil {
		return Pipeline{}, err
	}
	if !linked {
		// A linked account's token was read from the store (on): there is
		// nothing to keep, and writing that copy back could store again a
		// connection Disconnect removed meanwhile.
		if err := s.keepCreatorToken(ctx, c); err != nil {
			return Pipeline{}, err
		}
	}
	secret, err := randomString(32)
	if err != nil {
		return Pipeline{}, err
	}
	pub, priv, err := newDeployKey(fmt.Sprintf("kontinuous@%s/%s", repo.Owner, repo.Name))
	if err != nil {
		return Pipeline{}, err
	}
	// Undo what was made if a later step fails. The undo uses a fresh
	// context: the request's may be what ended.
	var undo []func()
	fail := func(err error) (Pipeline, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return Pipeline{}, err
	}
	hookURL := fmt.Sprintf("%s/api/v1/pipelines/%s/%s/builds", s.cfg.PublicURL, repo.Owner, repo.Name)
	hookID, err := s.scm(c.UserID).CreateWebhook(ctx, c.Token, repo.Owner, repo.Name, Hook{URL: hookURL, Secret: secret, Events: events})
	if err != nil {
		return fail(fmt.Errorf("create webhook: %w", err))
	}
	undo = append(undo, func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.scm(c.UserID).DeleteWebhook(uctx, c.Token, repo.Owner, repo.Name, hookID); err != nil {
			s.log.Warn("undo: delete webhook", "pipeline", Key(repo.Owner, repo.Name), "error", err.Error())
		}
	})
	keyID, err := s.scm(c.UserID).CreateDeployKey(ctx, c.Token, repo.Owner, repo.Name, "kontinuous (read-only)", pub)
	if err != nil {
		return fail(fmt.Errorf("create deploy key: %w", err))
	}
	undo = append(undo, func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.scm(c.UserID).DeleteDeployKey(uctx, c.Token, repo.Owner, repo.Name, keyID); err != nil {
			s.log.Warn("undo: delete deploy key", "pipeline", Key(repo.Owner, repo.Name), "error", err.Error())
		}
	})
	login := req.Login
	if login == "" {
		login = c.Login
	}
	p := Pipeline{
		Owner: repo.Owner, Repo: repo.Name, Events: events, Login: login,
		Notif: []Notif{}, Secrets: []string{}, Vars: map[string]string{},
		OwnerUserID: c.UserID, Forge: ForgeOf(s.forges, c.UserID), RepoID: repo.ID, CloneURL: repo.CloneURL, DefaultBranch: repo.DefaultBranch,
		WebhookID: hookID, WebhookSecret: secret,
		DeployKeyID: keyID, DeployKeyPublic: pub, DeployKeyPrivate: priv,
		Created: Now(),
	}
	store := func(ctx context.Context) (Pipeline, error) {
		stored, err := s.cfg.Store.CreatePipeline(ctx, p)
		if errors.Is(err, ErrConflict) {
			err = Errorf(ErrConflict, "pipeline %s/%s already exists", req.Owner, req.Repo)
		}
		return stored, err
	}
	var stored Pipeline
	if linked {
		stored, err = s.whileLinked(ctx, caller, c, store)
	} else {
		stored, err = store(ctx)
	}
	if err != nil {
		return fail(err)
	}
	s.log.Info("pipeline created", "pipeline", stored.Key(), "by", c.UserID)
	return stored, nil
}

// whileLinked runs fn (storing what creator, caller's linked account,
// made) only while the link still exists: it holds creator's user lock
// (the one Disconnect holds from its pipeline check to the unlink) and
// checks the link under it. A Disconnect that ran since creatorOn read the
// link makes it ErrConflict (CreatePipeline then undoes what it made on
// the forge); one that runs after sees the stored pipeline and refuses.
// The lock is not reentrant: fn must not refresh a token or lock creator.
func (s *Service) whileLinked(ctx context.Context, caller, creator Caller, fn func(context.Context) (Pipeline, error)) (Pipeline, error) {
	forge := ForgeName(creator.UserID)
	if l, ok := s.cfg.Store.(UserLocker); ok {
		unlock, err := l.LockUser(ctx, creator.UserID)
		if err != nil {
			return Pipeline{}, fmt.Errorf("lock the %s connection of %s: %w", forge, caller.UserID, err)
		}
		defer unlock()
	}
	ls, ok := s.cfg.Store.(LinkStore)
	if !ok { // on links no account without one
		return Pipeline{}, Errorf(ErrNotImplemented, "this server keeps no connected accounts")
	}
	links, err := ls.LinkedUsers(ctx, caller.UserID)
	if err != nil {
		return Pipeline{}, err
	}
	if links[forge] != creator.UserID {
		return Pipeline{}, Errorf(ErrConflict, "your %s connection was removed while the pipeline was created: nothing was kept; connect it again to create the pipeline", forge)
	}
	return fn(ctx)
}

// keepCreatorToken stores the creator's token for the pipeline's clones
// and statuses when the request brought it (a token carried by the JWT,
// identities[0].access_token): the store may not hold it yet.
//
// A token with a refresh token is never written back. Such a pair was
// read from the store by this request (only login and refresh store
// one), so the store already holds it or a newer one: a refresh running
// meanwhile (another request, another server) rotates the pair, and the
// forge refuses the spent refresh token this request read. Writing that
// copy back would replace the live pair with a spent one, and the next
// refresh would fail with invalid_grant, marking the connection expired.
func (s *Service) keepCreatorToken(ctx context.Context, c Caller) error {
	if c.Token.RefreshToken != "" {
		return nil
	}
	return s.cfg.Store.PutUser(ctx, User{ID: c.UserID, Login: c.Login, Token: c.Token, Updated: Now()})
}

func normalizeEvents(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, Invalid("events", "required; must include %q", EventPush)
	}
	allowed := []string{EventPush, EventPullRequest, EventDeployment}
	var out []string
	for _, e := range in {
		e = strings.TrimSpace(e)
		if !slices.Contains(allowed, e) {
			return nil, Invalid("events", "%q is not one of push, pull_request, deployment", e)
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	if !slices.Contains(out, EventPush) {
		return nil, Invalid("events", "must include %q", EventPush)
	}
	sort.Strings(out)
	return out, nil
}

// GetPipeline returns a pipeline the caller can read.
func (s *Service) GetPipeline(ctx context.Context, c Caller, owner, repo string) (Pipeline, error) {
	if err := s.authorize(ctx, c, owner, repo, PermRead); err != nil {
		if errors.Is(err, ErrNotFound) {
			if p, oerr := s.orphanFor(ctx, c, owner, repo); oerr == nil {
				return orphanView(p), nil
			}
		}
		return Pipeline{}, err
	}
	return s.pipelineOf(ctx, c, owner, repo)
}

// DeletePipeline removes the webhook, the deploy key, builds, logs and
// secrets of a pipeline.
func (s *Service) DeletePipeline(ctx context.Context, c Caller, owner, repo string) error {
	c, err := s.forPipeline(ctx, c, owner, repo)
	if err != nil {
		return err
	}
	orphan := false
	if err := s.authorize(ctx, c, owner, repo, PermAdmin); err != nil {
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		// An orphaned pipeline may be deleted by those shown it as such
		// (its creator, admins of the repository now holding its name).
		if _, oerr := s.orphanFor(ctx, c, owner, repo); oerr != nil {
			return err
		}
		orphan = true
	}
	p, err := s.pipelineOf(ctx, c, owner, repo)
	if err != nil {
		return err
	}
	if orphan {
		// Its webhook and deploy key went with the repository; the one
		// holding the name now is not this pipeline's to touch.
		p.WebhookID, p.DeployKeyID = 0, 0
	}
	if s.cfg.Engine != nil {
		s.cfg.Engine.CancelPipeline(ctx, p)
	}
	if p.WebhookID != 0 {
		if err := s.scm(c.UserID).DeleteWebhook(ctx, c.Token, p.Owner, p.Repo, p.WebhookID); err != nil {
			return fmt.Errorf("delete webhook: %w", err)
		}
	}
	if p.DeployKeyID != 0 {
		if err := s.scm(c.UserID).DeleteDeployKey(ctx, c.Token, p.Owner, p.Repo, p.DeployKeyID); err != nil {
			return fmt.Errorf("delete deploy key: %w", err)
		}
	}
	if err := s.cfg.Store.DeletePipeline(ctx, owner, repo); err != nil {
		return err
	}
	if s.cfg.Logs != nil {
		if err := s.cfg.Logs.DeletePipeline(ctx, p.Key()); err != nil {
			s.log.Warn("delete pipeline logs", "pipeline", p.Key(), "error", err.Error())
		}
	}
	s.log.Info("pipeline deleted", "pipeline", p.Key(), "by", c.UserID)
	return nil
}

// Definition is a .pipeline.yml at a ref, as the original API showed it.
type Definition struct {
	// Content is the file, base64-encoded.
	Content string `json:"content"`
	// SHA is the blob SHA (needed to update the file).
	SHA string `json:"sha"`
}

// GetDefinition reads .pipeline.yml at ref ("" = default branch).
func (s *Service) GetDefinition(ctx context.Context, c Caller, owner, repo, ref string) (Definition, error) {
	c, err := s.forPipeline(ctx, c, owner, repo)
	if err != nil {
		return Definition{}, err
	}
	if ref != "" {
		if err := ValidateRef("ref", ref); err != nil {
			return Definition{}, err
		}
	}
	if err := s.authorize(ctx, c, owner, repo, PermRead); err != nil {
		return Definition{}, err
	}
	if _, err := s.pipelineOf(ctx, c, owner, repo); err != nil {
		return Definition{}, err
	}
	f, err := s.scm(c.UserID).FileAt(ctx, c.Token, owner, repo, SpecPath, ref)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Definition{}, Errorf(ErrNotFound, "%s not found at %q in %s/%s", SpecPath, refOrDefault(ref), owner, repo)
		}
		return Definition{}, err
	}
	return Definition{Content: base64.StdEncoding.EncodeToString(f.Content), SHA: f.SHA}, nil
}

func refOrDefault(ref string) string {
	if ref == "" {
		return "default branch"
	}
	return ref
}

// DefinitionUpdate is the body of a definition update.
type DefinitionUpdate struct {
	Definition Definition   `json:"definition"`
	Commit     CommitOption `json:"commit"`
}

// CommitOption says how a definition change is committed.
type CommitOption struct {
	Message string `json:"message"`
	// Option is "commit" (straight to BranchName, default the default
	// branch) or "pull_request" (a new branch BranchName and a PR).
	Option     string `json:"option"`
	BranchName string `json:"branch_name"`
}

// DefinitionResult tells what an update made.
type DefinitionResult struct {
	Commit      string `json:"commit"`
	Branch      string `json:"branch"`
	PullRequest string `json:"pull_request,omitempty"`
}

// UpdateDefinition commits a new .pipeline.yml directly or through a pull
// request.
func (s *Service) UpdateDefinition(ctx context.Context, c Caller, owner, repo string, u DefinitionUpdate) (DefinitionResult, error) {
	c, err := s.forPipeline(ctx, c, owner, repo)
	if err != nil {
		return DefinitionResult{}, err
	}
	content, err := base64.StdEncoding.DecodeString(u.Definition.Content)
	if err != nil {
		return DefinitionResult{}, Invalid("definition.content", "must be base64")
	}
	if len(content) == 0 {
		return DefinitionResult{}, Invalid("definition.content", "must not be empty")
	}
	if u.Commit.Message == "" {
		u.Commit.Message = "Update " + SpecPath
	}
	switch u.Commit.Option {
	case "", "commit", "pull_request":
	default:
		return DefinitionResult{}, Invalid("commit.option", "%q: use commit or pull_request", u.Commit.Option)
	}
	if u.Commit.BranchName != "" {
		if err := ValidateRef("commit.branch_name", u.Commit.BranchName); err != nil {
			return DefinitionResult{}, err
		}
	}
	if u.Commit.Option == "pull_request" && u.Commit.BranchName == "" {
		return DefinitionResult{}, Invalid("commit.branch_name", "required for a pull_request")
	}
	if err := s.authorize(ctx, c, owner, repo, PermAdmin); err != nil {
		return DefinitionResult{}, err
	}
	p, err := s.pipelineOf(ctx, c, owner, repo)
	if err != nil {
		return DefinitionResult{}, err
	}
	r, err := s.scm(c.UserID).Repository(ctx, c.Token, p.Owner, p.Repo)
	if err != nil {
		return DefinitionResult{}, err
	}
	base := r.DefaultBranch
	if u.Commit.Option == "pull_request" {
		head, err := s.scm(c.UserID).BranchHead(ctx, c.Token, p.Owner, p.Repo, base)
		if err != nil {
			return DefinitionResult{}, err
		}
		if err := s.scm(c.UserID).CreateBranch(ctx, c.Token, p.Owner, p.Repo, u.Commit.BranchName, head); err != nil {
			return DefinitionResult{}, err
		}
		sha, err := s.scm(c.UserID).PutFile(ctx, c.Token, p.Owner, p.Repo, SpecPath, u.Commit.BranchName, u.Commit.Message, content, u.Definition.SHA)
		if err != nil {
			return DefinitionResult{}, err
		}
		pr, err := s.scm(c.UserID).CreatePullRequest(ctx, c.Token, p.Owner, p.Repo, u.Commit.Message, u.Commit.BranchName, base)
		if err != nil {
			return DefinitionResult{}, err
		}
		return DefinitionResult{Commit: sha, Branch: u.Commit.BranchName, PullRequest: pr}, nil
	}
	branch := u.Commit.BranchName
	if branch == "" {
		branch = base
	}
	sha, err := s.scm(c.UserID).PutFile(ctx, c.Token, p.Owner, p.Repo, SpecPath, branch, u.Commit.Message, content, u.Definition.SHA)
	if err != nil {
		return DefinitionResult{}, err
	}
	return DefinitionResult{Commit: sha, Branch: branch}, nil
}

// checkSecretName refuses a name no secret set can have (ErrInvalid).
func checkSecretName(name string) error {
	if !secretNameRe.MatchString(name) {
		return Invalid("name", "%q must be lower-case letters, digits, '-' or '.', at most 63 characters", name)
	}
	return nil
}

// SecretsBody is the body of a secret PUT.
type SecretsBody struct {
	Data map[string]string `json:"data"`
}

// PutSecret stores a secret set (values encrypted at rest by the store).
func (s *Service) PutSecret(ctx context.Context, c Caller, owner, repo, name string, data map[string]string) (SecretSet, error) {
	if err := checkSecretName(name); err != nil {
		return SecretSet{}, err
	}
	if len(data) == 0 {
		return SecretSet{}, Invalid("data", "must have at least one key")
	}
	size := 0
	keys := make([]string, 0, len(data))
	for k, v := range data {
		if !envKeyRe.MatchString(k) {
			return SecretSet{}, Invalid("data", "key %q must be a valid environment variable name", k)
		}
		size += len(k) + len(v)
		keys = append(keys, k)
	}
	if size > 256<<10 {
		return SecretSet{}, Invalid("data", "a secret set holds at most 256 KiB")
	}
	sort.Strings(keys)
	if err := s.authorize(ctx, c, owner, repo, PermAdmin); err != nil {
		return SecretSet{}, err
	}
	set := SecretSet{Name: name, Data: data, Keys: keys}
	if err := s.cfg.Store.PutSecret(ctx, owner, repo, set); err != nil {
		return SecretSet{}, err
	}
	return SecretSet{Name: name, Keys: keys}, nil
}

// ListSecrets lists secret names and keys, never values.
func (s *Service) ListSecrets(ctx context.Context, c Caller, owner, repo string) ([]SecretSet, error) {
	if err := s.authorize(ctx, c, owner, repo, PermAdmin); err != nil {
		return nil, err
	}
	sets, err := s.cfg.Store.ListSecrets(ctx, owner, repo)
	if err != nil {
		return nil, err
	}
	out := make([]SecretSet, 0, len(sets))
	for _, set := range sets {
		out = append(out, redact(set))
	}
	return out, nil
}

// GetSecret shows one secret set's keys, never values.
func (s *Service) GetSecret(ctx context.Context, c Caller, owner, repo, name string) (SecretSet, error) {
	if err := checkSecretName(name); err != nil {
		return SecretSet{}, err
	}
	if err := s.authorize(ctx, c, owner, repo, PermAdmin); err != nil {
		return SecretSet{}, err
	}
	set, err := s.cfg.Store.GetSecret(ctx, owner, repo, name)
	if err != nil {
		return SecretSet{}, err
	}
	return redact(set), nil
}

func redact(set SecretSet) SecretSet {
	keys := make([]string, 0, len(set.Data))
	for k := range set.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return SecretSet{Name: set.Name, Keys: keys}
}

// DeleteSecret removes a secret set.
func (s *Service) DeleteSecret(ctx context.Context, c Caller, owner, repo, name string) error {
	if err := checkSecretName(name); err != nil {
		return err
	}
	if err := s.authorize(ctx, c, owner, repo, PermAdmin); err != nil {
		return err
	}
	return s.cfg.Store.DeleteSecret(ctx, owner, repo, name)
}

// ListBuilds pages through builds, newest first.
func (s *Service) ListBuilds(ctx context.Context, c Caller, owner, repo string, limit, before int) ([]Build, error) {
	if err := s.authorize(ctx, c, owner, repo, PermRead); err != nil {
		return nil, err
	}
	// Store.ListBuilds answers ErrNotFound for a missing pipeline in the
	// same round trip: no separate GetPipeline.
	return s.cfg.Store.ListBuilds(ctx, owner, repo, limit, before)
}

// GetBuild returns one build with its stages.
func (s *Service) GetBuild(ctx context.Context, c Caller, owner, repo string, number int) (Build, error) {
	if err := s.authorize(ctx, c, owner, repo, PermRead); err != nil {
		return Build{}, err
	}
	return s.cfg.Store.GetBuild(ctx, owner, repo, number)
}

// DeleteBuild removes a finished build and its logs.
func (s *Service) DeleteBuild(ctx context.Context, c Caller, owner, repo string, number int) error {
	if err := s.authorize(ctx, c, owner, repo, PermAdmin); err != nil {
		return err
	}
	b, err := s.cfg.Store.GetBuild(ctx, owner, repo, number)
	if err != nil {
		return err
	}
	if !b.Status.Done() {
		return Errorf(ErrConflict, "build %d is %s; cancel it before deleting it", number, b.Status)
	}
	if err := s.cfg.Store.DeleteBuild(ctx, owner, repo, number); err != nil {
		return err
	}
	if s.cfg.Logs != nil {
		if err := s.cfg.Logs.DeleteBuild(ctx, Key(owner, repo), number); err != nil {
			s.log.Warn("delete build logs", "pipeline", Key(owner, repo), "build", number, "error", err.Error())
		}
	}
	return nil
}

// GetStage returns one stage of a build.
func (s *Service) GetStage(ctx context.Context, c Caller, owner, repo string, number, index int) (Stage, error) {
	b, err := s.GetBuild(ctx, c, owner, repo, number)
	if err != nil {
		return Stage{}, err
	}
	return stageAt(b, index)
}

func stageAt(b Build, index int) (Stage, error) {
	for _, st := range b.Stages {
		if st.Index == index {
			return st, nil
		}
	}
	return Stage{}, Errorf(ErrNotFound, "build %d has no stage %d", b.Number, index)
}

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newDeployKey makes an ed25519 key pair: the OpenSSH public key line and
// the OpenSSH PEM private key.
func newDeployKey(comment string) (pub, priv string, err error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	sp, err := ssh.NewPublicKey(pk)
	if err != nil {
		return "", "", err
	}
	block, err := ssh.MarshalPrivateKey(sk, comment)
	if err != nil {
		return "", "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment, string(pem.EncodeToMemory(block)), nil
}
