// Package fakebitbucketdc is a stand-in Bitbucket Data Center for tests:
// one httptest server that speaks, at the protocol level,
//
//   - the OAuth 2.0 incoming application link (Data Center 7.21+):
//     GET /rest/oauth2/latest/authorize and POST /rest/oauth2/latest/token
//     with the authorization_code grant (PKCE S256 verified when the
//     authorize request carried a challenge) and the refresh_token grant
//     (refresh tokens rotate); access tokens expire after TokenTTL;
//   - the REST API under /rest/api/latest (users, repositories with Data
//     Center's paging {size, limit, isLastPage, start, nextPageStart,
//     values}, permissions through ?permission=REPO_READ|REPO_WRITE|
//     REPO_ADMIN, raw files, branches, commits, webhooks, build statuses)
//     and SSH access keys under /rest/keys/latest; every authenticated reply
//     carries the user name in X-AUSERNAME as Data Center's does;
//   - git smart HTTP at /scm/{project}/{slug}.git backed by real bare
//     repositories served by git-http-backend. Like Data Center, git
//     accepts HTTP access tokens (basic auth user:token), not OAuth tokens.
//
// Deliver sends signed webhooks (X-Event-Key, X-Request-Id,
// X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>) to the hooks
// a repository has.
package fakebitbucketdc

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// Permission levels of the stand-in, Data Center's names.
const (
	RepoRead  = "REPO_READ"
	RepoWrite = "REPO_WRITE"
	RepoAdmin = "REPO_ADMIN"
)

var permRank = map[string]int{RepoRead: 1, RepoWrite: 2, RepoAdmin: 3}

// Server is a running fake Bitbucket Data Center. Its methods are safe for
// concurrent use.
type Server struct {
	// URL is the base URL (what --bitbucket-dc-url takes).
	URL string

	t    testing.TB
	srv  *httptest.Server
	git  *gitrepo.Root
	gitH http.Handler // git smart HTTP under /scm/

	mu          sync.Mutex
	now         func() time.Time
	tokenTTL    time.Duration
	nextID      int64
	users       map[string]*user // by name
	access      map[string]grant // OAuth access token
	refresh     map[string]grant // OAuth refresh token
	httpTokens  map[string]string
	apps        map[string]string // client id -> secret
	codes       map[string]*code
	repos       map[string]*Repo // by "KEY/slug" lower-cased
	authorizeAs string
	requests    []RecordedRequest
}

type user struct {
	name string
	id   int64
}

type grant struct {
	user     string
	clientID string
	expires  time.Time
}

type code struct {
	user, clientID, redirect, challenge, method string
	expires                                     time.Time
	used                                        bool
}

// RecordedRequest is one request the server received.
type RecordedRequest struct {
	Method, Path, Query, User string
}

// Repo is a repository: a real bare git repository on disk (its Dir,
// DefaultBranch "main", Head and File come from gitrepo.Repo).
type Repo struct {
	*gitrepo.Repo
	// Project is the project key, Slug the repository slug.
	Project, Slug string
	// ID is Data Center's numeric repository id.
	ID int64
	// CloneURL is the HTTP clone URL, URL + "/scm/{key}/{slug}.git".
	CloneURL string

	s      *Server
	grants map[string]string // user -> permission
	hooks  []Hook
	keys   []AccessKey
	builds map[string][]BuildStatus
	prs    []PullRequest
}

// Hook is an installed webhook.
type Hook struct {
	ID     int64    `json:"id"`
	Name   string   `json:"name"`
	URL    string   `json:"url"`
	Events []string `json:"events"`
	Active bool     `json:"active"`
	Secret string   `json:"-"`
}

// AccessKey is an SSH access key of a repository.
type AccessKey struct {
	ID         int64
	Text       string
	Permission string
}

// BuildStatus is a recorded build status.
type BuildStatus struct {
	State, Key, Name, URL, Description string
}

// PullRequest is an opened pull request.
type PullRequest struct {
	ID             int64
	Title          string
	FromRef, ToRef string
}

// New starts a stand-in; it stops at the end of the test.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:        t,
		now:      time.Now,
		tokenTTL: time.Hour,
		nextID:   1,
		users:    map[string]*user{}, access: map[string]grant{}, refresh: map[string]grant{},
		httpTokens: map[string]string{}, apps: map[string]string{}, codes: map[string]*code{},
		repos: map[string]*Repo{},
	}
	s.git = gitrepo.New(t, gitrepo.Config{Committer: "Bitbucket <noreply@example.com>", Clock: s.clock})
	s.gitH = s.git.Handler("/scm/", s.checkGit)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.URL = "http://" + s.srv.Listener.Addr().String()
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s
}

// SetClock replaces the server's clock (token and code expiry).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetTokenTTL sets the lifetime of access tokens issued from now on.
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTTL = d
}

func (s *Server) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

// AddUser creates a user and returns its numeric id.
func (s *Server) AddUser(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	s.users[name] = &user{name: name, id: s.nextID}
	return s.nextID
}

// AddHTTPToken gives user an HTTP access token (what git accepts).
func (s *Server) AddHTTPToken(name, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.httpTokens[token] = name
}

// AddOAuthApp registers an incoming application link's client.
func (s *Server) AddOAuthApp(clientID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[clientID] = secret
}

// AuthorizeAs makes the authorize page approve at once as user ("" shows
// the consent page).
func (s *Server) AuthorizeAs(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorizeAs = name
}

// IssueToken returns a fresh OAuth access token for user (as if the user
// had authorized clientID), valid for the token TTL.
func (s *Server) IssueToken(name, clientID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := randomHex(20)
	s.access[tok] = grant{user: name, clientID: clientID, expires: s.now().Add(s.tokenTTL)}
	return tok
}

// Requests returns the requests received so far.
func (s *Server) Requests() []RecordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// AddRepo creates project/slug with one commit (README.md) on "main".
func (s *Server) AddRepo(project, slug string) *Repo {
	s.t.Helper()
	s.mu.Lock()
	s.nextID++
	r := &Repo{
		Repo:    s.git.Repo(strings.ToLower(project) + "/" + slug + ".git"),
		Project: project, Slug: slug, ID: s.nextID,
		CloneURL: s.URL + "/scm/" + strings.ToLower(project) + "/" + slug + ".git",
		s:        s, grants: map[string]string{}, builds: map[string][]BuildStatus{},
	}
	s.repos[repoKey(project, slug)] = r
	s.mu.Unlock()
	if err := r.Init(slug, author(project)); err != nil {
		s.t.Fatalf("fakebitbucketdc: %v", err)
	}
	return r
}

// Grant gives user perm (RepoRead, RepoWrite, RepoAdmin or "" for none)
// on project/slug.
func (s *Server) Grant(name, project, slug, perm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoKey(project, slug)]
	if perm == "" {
		delete(r.grants, name)
		return
	}
	r.grants[name] = perm
}

// Hooks returns the webhooks of project/slug.
func (s *Server) Hooks(project, slug string) []Hook {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.repos[repoKey(project, slug)].hooks)
}

// AccessKeys returns the SSH access keys of project/slug.
func (s *Server) AccessKeys(project, slug string) []AccessKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.repos[repoKey(project, slug)].keys)
}

// Builds returns the build statuses posted on sha, oldest first.
func (s *Server) Builds(project, slug, sha string) []BuildStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.repos[repoKey(project, slug)].builds[sha])
}

// PullRequests returns the opened pull requests.
func (s *Server) PullRequests(project, slug string) []PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.repos[repoKey(project, slug)].prs)
}

func repoKey(project, slug string) string { return strings.ToLower(project + "/" + slug) }

func (r *Repo) permOf(name string) int {
	return permRank[r.grants[name]]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may have gone
}

// restError answers Data Center's error shape.
func restError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"context": nil, "message": msg, "exceptionName": nil}}})
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	name := s.bearerUser(r)
	s.mu.Lock()
	s.requests = append(s.requests, RecordedRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, User: name})
	s.mu.Unlock()
	p := r.URL.Path
	switch {
	case p == "/rest/oauth2/latest/authorize":
		s.serveAuthorize(w, r)
	case p == "/rest/oauth2/latest/token":
		s.serveToken(w, r)
	case strings.HasPrefix(p, "/scm/"):
		s.gitH.ServeHTTP(w, r)
	case strings.HasPrefix(p, "/rest/"):
		if r.Header.Get("Authorization") != "" && name == "" {
			restError(w, http.StatusUnauthorized, "Authentication failed. Please check your credentials and try again.")
			return
		}
		if name != "" {
			w.Header().Set("X-AUSERNAME", name)
		}
		s.serveREST(w, r, name)
	default:
		restError(w, http.StatusNotFound, "not found")
	}
}

// bearerUser is the user of a valid, unexpired OAuth access token.
func (s *Server) bearerUser(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.access[tok]
	if !ok || !s.now().Before(g.expires) {
		return ""
	}
	return g.user
}

func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	_, known := s.apps[q.Get("client_id")]
	as := s.authorizeAs
	s.mu.Unlock()
	if !known || q.Get("response_type") != "code" {
		http.Error(w, "invalid client or response_type", http.StatusBadRequest)
		return
	}
	if m := q.Get("code_challenge_method"); q.Get("code_challenge") != "" && m != "S256" {
		http.Error(w, "unsupported code_challenge_method", http.StatusBadRequest)
		return
	}
	target, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || !target.IsAbs() {
		http.Error(w, "invalid redirect_uri", http.StatusBadRequest)
		return
	}
	if as == "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>Allow access</title>"))
		return
	}
	c := randomHex(16)
	s.mu.Lock()
	s.codes[c] = &code{user: as, clientID: q.Get("client_id"), redirect: q.Get("redirect_uri"),
		challenge: q.Get("code_challenge"), method: q.Get("code_challenge_method"), expires: s.now().Add(10 * time.Minute)}
	s.mu.Unlock()
	tq := target.Query()
	tq.Set("code", c)
	if st := q.Get("state"); st != "" {
		tq.Set("state", st)
	}
	target.RawQuery = tq.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

func oauthError(w http.ResponseWriter, status int, e, desc string) {
	writeJSON(w, status, map[string]string{"error": e, "error_description": desc})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if want, ok := s.apps[id]; !ok || secret == "" || !hmac.Equal([]byte(want), []byte(secret)) {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	var who string
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		c := s.codes[r.PostForm.Get("code")]
		if c == nil || c.used || c.clientID != id || !s.now().Before(c.expires) || c.redirect != r.PostForm.Get("redirect_uri") {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code is invalid or expired")
			return
		}
		if c.challenge != "" {
			sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
			if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
				oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
				return
			}
		}
		c.used = true
		who = c.user
	case "refresh_token":
		g, ok := s.refresh[r.PostForm.Get("refresh_token")]
		if !ok || g.clientID != id {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token is invalid")
			return
		}
		delete(s.refresh, r.PostForm.Get("refresh_token"))
		who = g.user
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "unsupported grant type")
		return
	}
	at, rt := randomHex(20), randomHex(20)
	s.access[at] = grant{user: who, clientID: id, expires: s.now().Add(s.tokenTTL)}
	s.refresh[rt] = grant{user: who, clientID: id}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": at, "token_type": "bearer", "expires_in": int(s.tokenTTL.Seconds()),
		"refresh_token": rt, "scope": "REPO_ADMIN",
	})
}

// Delivery is the outcome of one webhook delivery.
type Delivery struct {
	HookID    int64
	RequestID string
	Status    int
	Body      string
	Err       error
}

// Sign is the X-Hub-Signature value for body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Deliver posts payload as event to each hook of project/slug subscribed
// to it, signed with the hook's secret.
func (s *Server) Deliver(ctx context.Context, project, slug, event string, payload []byte) ([]Delivery, error) {
	s.mu.Lock()
	r := s.repos[repoKey(project, slug)]
	var hooks []Hook
	if r != nil {
		for _, h := range r.hooks {
			if h.Active && slices.Contains(h.Events, event) {
				hooks = append(hooks, h)
			}
		}
	}
	s.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("fakebitbucketdc: no repository %s/%s", project, slug)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	var out []Delivery
	for _, h := range hooks {
		d := Delivery{HookID: h.ID, RequestID: randomHex(16)}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(payload))
		if err != nil {
			d.Err = err
			out = append(out, d)
			continue
		}
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("User-Agent", "Atlassian HttpClient")
		req.Header.Set("X-Event-Key", event)
		req.Header.Set("X-Request-Id", d.RequestID)
		if h.Secret != "" {
			req.Header.Set("X-Hub-Signature", Sign(h.Secret, payload))
		}
		resp, err := client.Do(req)
		if err != nil {
			d.Err = err
		} else {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			d.Status, d.Body = resp.StatusCode, b.String()
		}
		out = append(out, d)
	}
	return out, nil
}

// repoJSON is Data Center's repository object.
func (r *Repo) repoJSON() map[string]any {
	return map[string]any{
		"id": r.ID, "slug": r.Slug, "name": r.Slug, "scmId": "git", "state": "AVAILABLE", "public": false,
		"project": map[string]any{"key": r.Project, "id": 1, "name": r.Project, "type": "NORMAL"},
		"links": map[string]any{
			"clone": []map[string]string{{"href": r.CloneURL, "name": "http"}, {"href": "ssh://git@" + strings.TrimPrefix(r.s.URL, "http://") + "/" + strings.ToLower(r.Project) + "/" + r.Slug + ".git", "name": "ssh"}},
			"self":  []map[string]string{{"href": r.s.URL + "/projects/" + r.Project + "/repos/" + r.Slug + "/browse"}},
		},
	}
}

// RefsChangedPayload is a repo:refs_changed payload: one change of
// refs/heads/branch from fromHash to toHash (type UPDATE, ADD or DELETE).
func RefsChangedPayload(r *Repo, actor, branch, fromHash, toHash, typ string) []byte {
	return RefsChangedPayloadOf(r, actor, RefChange{Branch: branch, FromHash: fromHash, ToHash: toHash, Type: typ})
}

// RefChange is one change of a repo:refs_changed payload.
type RefChange struct {
	Branch, FromHash, ToHash string
	// Type is UPDATE, ADD or DELETE.
	Type string
}

// RefsChangedPayloadOf is a repo:refs_changed payload with several
// branch changes (one push of several branches).
func RefsChangedPayloadOf(r *Repo, actor string, changes ...RefChange) []byte {
	cs := make([]map[string]any, 0, len(changes))
	for _, c := range changes {
		cs = append(cs, map[string]any{
			"ref":   map[string]any{"id": "refs/heads/" + c.Branch, "displayId": c.Branch, "type": "BRANCH"},
			"refId": "refs/heads/" + c.Branch, "fromHash": c.FromHash, "toHash": c.ToHash, "type": c.Type,
		})
	}
	b, _ := json.Marshal(map[string]any{
		"eventKey": "repo:refs_changed", "date": time.Now().Format("2006-01-02T15:04:05-0700"),
		"actor":      map[string]any{"name": actor, "id": 1, "slug": actor, "type": "NORMAL"},
		"repository": r.repoJSON(),
		"changes":    cs,
	})
	return b
}

// PullRequestPayload is a pr:opened or pr:from_ref_updated payload from
// from's branch at sha into to's toBranch.
func PullRequestPayload(event string, from *Repo, fromBranch, sha string, to *Repo, toBranch, actor string) []byte {
	ref := func(r *Repo, branch, commit string) map[string]any {
		return map[string]any{"id": "refs/heads/" + branch, "displayId": branch, "latestCommit": commit, "repository": r.repoJSON()}
	}
	b, _ := json.Marshal(map[string]any{
		"eventKey": event, "date": time.Now().Format("2006-01-02T15:04:05-0700"),
		"actor": map[string]any{"name": actor, "id": 1, "slug": actor, "type": "NORMAL"},
		"pullRequest": map[string]any{
			"id": 1, "version": 0, "title": "change", "state": "OPEN", "open": true,
			"fromRef": ref(from, fromBranch, sha), "toRef": ref(to, toBranch, to.Head(toBranch)),
		},
	})
	return b
}

// page answers Data Center's paged shape for values.
func page[T any](w http.ResponseWriter, r *http.Request, values []T) {
	start, _ := strconv.Atoi(r.URL.Query().Get("start"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 25
	}
	if start < 0 || start > len(values) {
		start = len(values)
	}
	end := min(start+limit, len(values))
	out := map[string]any{"size": end - start, "limit": limit, "start": start, "isLastPage": end >= len(values), "values": values[start:end]}
	if end < len(values) {
		out["nextPageStart"] = end
	}
	writeJSON(w, http.StatusOK, out)
}
