// Package github implements pipeline.SCM on GitHub's REST API (github.com
// or GitHub Enterprise) with go-github. Every call acts with the token it is
// given; nothing here holds a token beyond the call. Errors wrap the
// pipeline sentinels and never carry tokens or webhook secrets.
package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

// Config configures an SCM. Zero values take the defaults.
type Config struct {
	// APIURL is the REST base: https://api.github.com/ (default) or, for
	// GitHub Enterprise, https://host/api/v3/.
	APIURL string
	// HTTPClient makes the calls (default: a client with a 30 s timeout).
	HTTPClient *http.Client
	// PermissionTTL is how long a permission look-up is reused (default 30 s).
	PermissionTTL time.Duration
	// PermissionCacheSize bounds the permission cache (default 10000 entries).
	PermissionCacheSize int
	// PageSize is the page size used to list repositories (default and
	// maximum 100).
	PageSize int
	// Logger receives diagnostics (default: discarded).
	Logger *slog.Logger
	// Now is the clock of the permission cache (default time.Now).
	Now func() time.Time
	// OAuth is the login through GitHub's OAuth app (nil: login answers
	// ErrNotImplemented).
	OAuth *OAuth
}

// SCM is GitHub as pipeline.SCM. It is safe for concurrent use.
type SCM struct {
	base     *github.Client
	perms    *forgeutil.PermCache
	pageSize int
	log      *slog.Logger
	oauth    *OAuth
}

var _ pipeline.Forge = (*SCM)(nil)
var _ pipeline.RepoAccessor = (*SCM)(nil)

// DefaultAPIURL is github.com's REST base.
const DefaultAPIURL = "https://api.github.com/"

// New returns an SCM for cfg; it fails (ErrInvalid) if APIURL is not an
// absolute http(s) URL.
func New(cfg Config) (*SCM, error) {
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	u, err := url.Parse(cfg.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, pipeline.Invalid("APIURL", "must be an absolute http(s) URL without credentials, e.g. %s", DefaultAPIURL)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	c := github.NewClient(hc)
	if strings.EqualFold(u.Hostname(), "api.github.com") {
		c.BaseURL = u
	} else {
		upload := *u
		upload.Path = strings.TrimSuffix(upload.Path, "api/v3/") + "api/uploads/"
		if c, err = c.WithEnterpriseURLs(u.String(), upload.String()); err != nil {
			return nil, pipeline.Invalid("APIURL", "%v", err)
		}
	}
	c.UserAgent = "kontinuous"
	if cfg.PermissionTTL <= 0 {
		cfg.PermissionTTL = 30 * time.Second
	}
	if cfg.PermissionCacheSize <= 0 {
		cfg.PermissionCacheSize = 10000
	}
	if cfg.PageSize <= 0 || cfg.PageSize > 100 {
		cfg.PageSize = 100
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &SCM{
		base:     c,
		perms:    forgeutil.NewPermCache(cfg.PermissionTTL, cfg.PermissionCacheSize, cfg.Now),
		pageSize: cfg.PageSize,
		log:      cfg.Logger,
		oauth:    cfg.OAuth,
	}, nil
}

// Name is the forge's id prefix for users.
func (s *SCM) Name() string { return "github" }

// client returns a client authenticated with tok.
func (s *SCM) client(tok pipeline.ForgeToken) (*github.Client, error) {
	if !tok.Valid() {
		return nil, pipeline.Errorf(pipeline.ErrUnauthorized, "no GitHub token")
	}
	return s.base.WithAuthToken(tok.AccessToken), nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)

// checkRepo validates owner and name against GitHub's naming rules so that
// they cannot change the shape of a request path.
func checkRepo(owner, name string) error {
	if !nameRE.MatchString(owner) || owner == "." || owner == ".." {
		return pipeline.Invalid("owner", "%q is not a valid GitHub owner", owner)
	}
	if !nameRE.MatchString(name) || name == "." || name == ".." {
		return pipeline.Invalid("repo", "%q is not a valid GitHub repository name", name)
	}
	return nil
}

// checkBranch refuses what git refuses in a branch name.
func checkBranch(field, b string) error {
	bad := b == "" || len(b) > 255 || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") ||
		strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".") || strings.HasSuffix(b, ".lock") ||
		strings.Contains(b, "..") || strings.Contains(b, "//") || strings.Contains(b, "@{") || b == "@"
	for _, c := range b {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			bad = true
		}
	}
	if bad {
		return pipeline.Invalid(field, "%q is not a valid branch name", b)
	}
	return nil
}

func checkPath(p string) error {
	if p == "" || len(p) > 4096 || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\x00\n\r") {
		return pipeline.Invalid("path", "%q is not a valid file path", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return pipeline.Invalid("path", "%q is not a valid file path", p)
		}
	}
	return nil
}

var shaRE = regexp.MustCompile(`^[0-9a-fA-F]{40}([0-9a-fA-F]{24})?$`)

// User returns the token's owner.
func (s *SCM) User(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeUser, error) {
	c, err := s.client(tok)
	if err != nil {
		return pipeline.ForgeUser{}, fmt.Errorf("githubscm: get user: %w", err)
	}
	u, _, err := c.Users.Get(ctx, "")
	if err != nil {
		return pipeline.ForgeUser{}, s.fail(ctx, "get user", err)
	}
	if u.GetID() == 0 || u.GetLogin() == "" {
		return pipeline.ForgeUser{}, fmt.Errorf("githubscm: get user: %w", pipeline.Errorf(pipeline.ErrUpstream, "GitHub answered a user without id or login"))
	}
	return pipeline.ForgeUser{ID: u.GetID(), Login: u.GetLogin()}, nil
}

func toRepository(r *github.Repository) pipeline.Repository {
	owner := r.GetOwner().GetLogin()
	full := r.GetFullName()
	if full == "" {
		full = owner + "/" + r.GetName()
	}
	return pipeline.Repository{
		ID:            r.GetID(),
		Owner:         owner,
		Name:          r.GetName(),
		FullName:      full,
		AvatarURL:     r.GetOwner().GetAvatarURL(),
		DefaultBranch: r.GetDefaultBranch(),
		CloneURL:      r.GetCloneURL(),
		Private:       r.GetPrivate(),
	}
}

// permissionOf reads GitHub's permissions map: admin > push (maintain) >
// pull (triage).
func permissionOf(p map[string]bool) pipeline.Permission {
	switch {
	case p["admin"]:
		return pipeline.PermAdmin
	case p["push"] || p["maintain"]:
		return pipeline.PermPush
	case p["pull"] || p["triage"]:
		return pipeline.PermRead
	}
	return pipeline.PermNone
}

// maxRepoPages bounds a listing (100 pages of 100 = 10,000 repositories).
const maxRepoPages = 100

// Repositories lists every repository the token's user can access, across
// all pages of GET /user/repos.
func (s *SCM) Repositories(ctx context.Context, tok pipeline.ForgeToken) ([]pipeline.Repository, error) {
	c, err := s.client(tok)
	if err != nil {
		return nil, fmt.Errorf("githubscm: list repositories: %w", err)
	}
	opts := &github.RepositoryListByAuthenticatedUserOptions{
		Sort:        "full_name",
		ListOptions: github.ListOptions{PerPage: s.pageSize},
	}
	out := []pipeline.Repository{}
	for page := 0; ; page++ {
		if page == maxRepoPages {
			s.log.WarnContext(ctx, "githubscm: repository listing truncated", "pages", maxRepoPages)
			break
		}
		repos, resp, err := c.Repositories.ListByAuthenticatedUser(ctx, opts)
		if err != nil {
			return nil, s.fail(ctx, "list repositories", err)
		}
		for _, r := range repos {
			repo := toRepository(r)
			if r.Permissions != nil {
				p := permissionOf(r.Permissions)
				s.perms.PutAccess(tok, repo.Owner, repo.Name, p, r.GetID())
				repo.Permissions = &pipeline.Access{Read: p >= pipeline.PermRead, Push: p >= pipeline.PermPush, Admin: p >= pipeline.PermAdmin}
			}
			out = append(out, repo)
		}
		if resp.NextPage == 0 || resp.NextPage == opts.Page {
			break
		}
		opts.Page = resp.NextPage
	}
	return out, nil
}

// Repository returns one repository.
func (s *SCM) Repository(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Repository, error) {
	op := "get repository " + owner + "/" + name
	if err := checkRepo(owner, name); err != nil {
		return pipeline.Repository{}, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return pipeline.Repository{}, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	r, _, err := c.Repositories.Get(ctx, owner, name)
	if err != nil {
		return pipeline.Repository{}, s.fail(ctx, op, err)
	}
	if r.Permissions != nil {
		s.perms.PutAccess(tok, owner, name, permissionOf(r.Permissions), r.GetID())
	}
	return toRepository(r), nil
}

// Permission is the token user's access to owner/name from the
// repository's permissions, reused for the configured TTL. A repository
// the user cannot see is PermNone with a nil error.
func (s *SCM) Permission(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, error) {
	p, _, err := s.RepoAccess(ctx, tok, owner, name)
	return p, err
}

// RepoAccess is Permission with the id of the repository that owner/name
// names today (0 when the user cannot see it), from the same look-up and
// cache (pipeline.RepoAccessor).
func (s *SCM) RepoAccess(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, int64, error) {
	op := "get permission on " + owner + "/" + name
	if err := checkRepo(owner, name); err != nil {
		return pipeline.PermNone, 0, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return pipeline.PermNone, 0, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	if p, id, ok := s.perms.Access(tok, owner, name); ok && (id != 0 || p == pipeline.PermNone) {
		return p, id, nil
	}
	r, resp, err := c.Repositories.Get(ctx, owner, name)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			s.perms.Put(tok, owner, name, pipeline.PermNone)
			return pipeline.PermNone, 0, nil
		}
		return pipeline.PermNone, 0, s.fail(ctx, op, err)
	}
	p := permissionOf(r.Permissions)
	s.perms.PutAccess(tok, owner, name, p, r.GetID())
	return p, r.GetID(), nil
}

// BranchHead returns the commit SHA at the tip of branch.
func (s *SCM) BranchHead(ctx context.Context, tok pipeline.ForgeToken, owner, name, branch string) (string, error) {
	op := "get branch " + branch + " of " + owner + "/" + name
	if err := errors.Join(checkRepo(owner, name), checkBranch("branch", branch)); err != nil {
		return "", fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return "", fmt.Errorf("githubscm: %s: %w", op, err)
	}
	ref, _, err := c.Git.GetRef(ctx, owner, name, "heads/"+branch)
	if err != nil {
		return "", s.fail(ctx, op, err)
	}
	sha := ref.GetObject().GetSHA()
	if !shaRE.MatchString(sha) {
		return "", fmt.Errorf("githubscm: %s: %w", op, pipeline.Errorf(pipeline.ErrUpstream, "GitHub answered a branch without a commit SHA"))
	}
	return sha, nil
}

// FileAt reads path at ref ("" = the default branch).
func (s *SCM) FileAt(ctx context.Context, tok pipeline.ForgeToken, owner, name, path, ref string) (pipeline.File, error) {
	op := "read " + path + " of " + owner + "/" + name
	if err := errors.Join(checkRepo(owner, name), checkPath(path)); err != nil {
		return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	if strings.ContainsAny(ref, "\x00\n\r") {
		return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, pipeline.Invalid("ref", "%q is not a valid ref", ref))
	}
	c, err := s.client(tok)
	if err != nil {
		return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	file, dir, _, err := c.Repositories.GetContents(ctx, owner, name, path, &github.RepositoryContentGetOptions{Ref: ref})
	if err != nil {
		return pipeline.File{}, s.fail(ctx, op, err)
	}
	if file == nil {
		if dir != nil {
			return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, pipeline.Invalid("path", "%s is a directory", path))
		}
		return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, pipeline.ErrNotFound)
	}
	if file.GetType() != "" && file.GetType() != "file" {
		return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, pipeline.Invalid("path", "%s is a %s, not a file", path, file.GetType()))
	}
	if file.GetEncoding() == "none" {
		return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, pipeline.Errorf(pipeline.ErrTooLarge, "%s is too large to read through GitHub's contents API", path))
	}
	content, err := file.GetContent()
	if err != nil {
		return pipeline.File{}, fmt.Errorf("githubscm: %s: %w", op, pipeline.Errorf(pipeline.ErrUpstream, "GitHub answered undecodable content"))
	}
	return pipeline.File{Content: []byte(content), SHA: file.GetSHA()}, nil
}

// escapePath escapes each segment of a repository path for a URL.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// PutFile creates path (sha "") or replaces the blob sha with content on
// branch ("" = the default branch) and returns the new commit's SHA. A
// stale sha, or a create over an existing file, is ErrConflict.
func (s *SCM) PutFile(ctx context.Context, tok pipeline.ForgeToken, owner, name, path, branch, message string, content []byte, sha string) (string, error) {
	op := "write " + path + " of " + owner + "/" + name
	err := errors.Join(checkRepo(owner, name), checkPath(path))
	if err == nil && branch != "" {
		err = checkBranch("branch", branch)
	}
	if err == nil && sha != "" && !shaRE.MatchString(sha) {
		err = pipeline.Invalid("sha", "%q is not a blob SHA", sha)
	}
	if err == nil && strings.TrimSpace(message) == "" {
		err = pipeline.Invalid("message", "a commit message is required")
	}
	if err != nil {
		return "", fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return "", fmt.Errorf("githubscm: %s: %w", op, err)
	}
	opts := &github.RepositoryContentFileOptions{Message: &message, Content: content}
	if content == nil {
		opts.Content = []byte{}
	}
	if branch != "" {
		opts.Branch = &branch
	}
	var res *github.RepositoryContentResponse
	if sha == "" {
		res, _, err = c.Repositories.CreateFile(ctx, owner, name, escapePath(path), opts)
	} else {
		opts.SHA = &sha
		res, _, err = c.Repositories.UpdateFile(ctx, owner, name, escapePath(path), opts)
	}
	if err != nil {
		return "", s.fail(ctx, op, err)
	}
	commit := res.Commit.GetSHA()
	if commit == "" {
		return "", fmt.Errorf("githubscm: %s: %w", op, pipeline.Errorf(pipeline.ErrUpstream, "GitHub answered no commit SHA"))
	}
	return commit, nil
}

// CreateBranch makes refs/heads/branch point at sha; an existing branch is
// ErrConflict.
func (s *SCM) CreateBranch(ctx context.Context, tok pipeline.ForgeToken, owner, name, branch, sha string) error {
	op := "create branch " + branch + " in " + owner + "/" + name
	err := errors.Join(checkRepo(owner, name), checkBranch("branch", branch))
	if err == nil && !shaRE.MatchString(sha) {
		err = pipeline.Invalid("sha", "%q is not a commit SHA", sha)
	}
	if err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	ref := "refs/heads/" + branch
	if _, _, err := c.Git.CreateRef(ctx, owner, name, &github.Reference{Ref: &ref, Object: &github.GitObject{SHA: &sha}}); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// CreatePullRequest opens a pull request of head into base and returns its
// web URL.
func (s *SCM) CreatePullRequest(ctx context.Context, tok pipeline.ForgeToken, owner, name, title, head, base string) (string, error) {
	op := "open pull request in " + owner + "/" + name
	err := errors.Join(checkRepo(owner, name), checkBranch("head", head), checkBranch("base", base))
	if err == nil && strings.TrimSpace(title) == "" {
		err = pipeline.Invalid("title", "a pull request title is required")
	}
	if err != nil {
		return "", fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return "", fmt.Errorf("githubscm: %s: %w", op, err)
	}
	pr, _, err := c.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{Title: &title, Head: &head, Base: &base})
	if err != nil {
		return "", s.fail(ctx, op, err)
	}
	return pr.GetHTMLURL(), nil
}

// CreateWebhook installs an active JSON webhook signed with h.Secret and
// returns its id.
func (s *SCM) CreateWebhook(ctx context.Context, tok pipeline.ForgeToken, owner, name string, h pipeline.Hook) (int64, error) {
	op := "create webhook in " + owner + "/" + name
	err := checkRepo(owner, name)
	if u, perr := url.Parse(h.URL); err == nil && (perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		err = pipeline.Invalid("url", "the webhook URL must be an absolute http(s) URL")
	}
	if err == nil && h.Secret == "" {
		err = pipeline.Invalid("secret", "a webhook secret is required")
	}
	if err != nil {
		return 0, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return 0, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	events := h.Events
	if len(events) == 0 {
		events = []string{pipeline.EventPush}
	}
	hook, _, err := c.Repositories.CreateHook(ctx, owner, name, &github.Hook{
		Config: &github.HookConfig{
			URL:         github.String(h.URL),
			ContentType: github.String("json"),
			Secret:      github.String(h.Secret),
			InsecureSSL: github.String("0"),
		},
		Events: events,
		Active: github.Bool(true),
	})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return hook.GetID(), nil
}

// DeleteWebhook removes a webhook; a missing one is not an error.
func (s *SCM) DeleteWebhook(ctx context.Context, tok pipeline.ForgeToken, owner, name string, id int64) error {
	op := fmt.Sprintf("delete webhook %d of %s/%s", id, owner, name)
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	if resp, err := c.Repositories.DeleteHook(ctx, owner, name, id); err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return nil
		}
		return s.fail(ctx, op, err)
	}
	return nil
}

// CreateDeployKey adds a read-only deploy key and returns its id.
func (s *SCM) CreateDeployKey(ctx context.Context, tok pipeline.ForgeToken, owner, name, title, publicKey string) (int64, error) {
	op := "add deploy key to " + owner + "/" + name
	err := checkRepo(owner, name)
	if err == nil && strings.TrimSpace(publicKey) == "" {
		err = pipeline.Invalid("key", "a public key is required")
	}
	if err != nil {
		return 0, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return 0, fmt.Errorf("githubscm: %s: %w", op, err)
	}
	k, _, err := c.Repositories.CreateKey(ctx, owner, name, &github.Key{
		Title: github.String(title), Key: github.String(strings.TrimSpace(publicKey)), ReadOnly: github.Bool(true)})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return k.GetID(), nil
}

// DeleteDeployKey removes a deploy key; a missing one is not an error.
func (s *SCM) DeleteDeployKey(ctx context.Context, tok pipeline.ForgeToken, owner, name string, id int64) error {
	op := fmt.Sprintf("delete deploy key %d of %s/%s", id, owner, name)
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	if resp, err := c.Repositories.DeleteKey(ctx, owner, name, id); err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return nil
		}
		return s.fail(ctx, op, err)
	}
	return nil
}

// maxStatusDescription is GitHub's limit on a status description.
const maxStatusDescription = 140

// SetCommitStatus posts a status on sha. A description longer than GitHub
// accepts is shortened.
func (s *SCM) SetCommitStatus(ctx context.Context, tok pipeline.ForgeToken, owner, name, sha string, st pipeline.CommitStatus) error {
	op := "set status on " + owner + "/" + name + "@" + sha
	err := checkRepo(owner, name)
	if err == nil && !shaRE.MatchString(sha) {
		err = pipeline.Invalid("sha", "%q is not a commit SHA", sha)
	}
	if err == nil {
		switch st.State {
		case "pending", "success", "failure", "error":
		default:
			err = pipeline.Invalid("state", "%q is not pending, success, failure or error", st.State)
		}
	}
	if err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	c, err := s.client(tok)
	if err != nil {
		return fmt.Errorf("githubscm: %s: %w", op, err)
	}
	rs := &github.RepoStatus{State: github.String(st.State)}
	if st.Context != "" {
		rs.Context = github.String(st.Context)
	}
	if d := []rune(st.Description); len(d) > maxStatusDescription {
		rs.Description = github.String(string(d[:maxStatusDescription-1]) + "…")
	} else if st.Description != "" {
		rs.Description = github.String(st.Description)
	}
	if st.TargetURL != "" {
		rs.TargetURL = github.String(st.TargetURL)
	}
	if _, _, err := c.Repositories.CreateStatus(ctx, owner, name, sha, rs); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}
