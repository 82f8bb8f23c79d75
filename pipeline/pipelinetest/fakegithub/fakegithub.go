// Package fakegithub is a stand-in GitHub for tests: one httptest server
// that speaks the REST API under a non-empty base path (/api/v3/, as GitHub
// Enterprise and go-github's own tests do), the OAuth web flow
// (/login/oauth/authorize, /login/oauth/access_token) and git smart HTTP
// (/git/{owner}/{name}.git) backed by real repositories on disk served by
// git's own git-http-backend.
//
// Everything a test sets up (users, tokens, OAuth apps, repositories,
// permissions) goes through methods on Server; everything the code under
// test did (webhooks installed, deploy keys, commit statuses, pull
// requests, requests made) can be read back. Faults are injected with
// FailNext, SetDown and SetDropConnections.
//
// Permissions follow GitHub: a user with no access to a repository gets 404
// for it; writes need push (contents, refs, statuses) or admin (hooks,
// keys) and answer 403 to a reader. A user whose login is the repository's
// owner is admin unless Grant says otherwise.
//
// Typical use:
//
//	gh := fakegithub.New(t)
//	gh.AddUser("alice", 1001, "tok-alice")
//	repo := gh.AddRepo("alice", "app") // alice is admin
//	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "add spec")
//	scm, _ := githubscm.New(githubscm.Config{APIURL: gh.APIURL})
//	// ... code under test installs a webhook; then GitHub delivers a push:
//	gh.Deliver(ctx, "alice", "app", "push", fakegithub.PushPayload(repo, "main", "", sha, "alice"))
//	// ... and clones repo.CloneURL with basic auth x-access-token:tok-alice.
//
// The OAuth exchange of a code issued for a user answers that user's latest
// AddUser token (a fresh "gho_" token if it has none), so tests know which
// token the code under test ends up holding.
package fakegithub

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// Server is a running fake GitHub. Its methods are safe for concurrent use.
type Server struct {
	// URL is the web base, e.g. http://127.0.0.1:port; the OAuth endpoints
	// live at URL + "/login/oauth/...".
	URL string
	// APIURL is the REST base, URL + "/api/v3/".
	APIURL string

	t       testing.TB
	srv     *httptest.Server
	git     *gitrepo.Root
	gitH    http.Handler // git smart HTTP under /git/
	closed  sync.Once
	muxOnce sync.Once
	mux     *http.ServeMux

	mu          sync.Mutex
	now         func() time.Time
	nextID      int64
	users       map[string]*user  // by lower-cased login
	tokens      map[string]string // token -> lower-cased login
	apps        map[string]string // client id -> secret
	codes       map[string]*oauthCode
	repos       map[string]*Repo // by lower-cased owner/name
	failures    []failure
	down        bool
	drop        bool
	requests    []RecordedRequest
	authorizeAs string
}

type user struct {
	login string
	id    int64
	token string // primary token, answered by the OAuth exchange
}

type oauthCode struct {
	login       string
	clientID    string
	redirectURI string
	scope       string
	expires     time.Time
	used        bool
}

type failure struct {
	method       string
	pathContains string
	status       int
	header       http.Header
	body         string
}

// RecordedRequest is one request the server received.
type RecordedRequest struct {
	Method string
	// Path is the URL path, e.g. /api/v3/repos/o/r/hooks.
	Path string
	// Query is the raw (encoded) query string.
	Query string
	// User is the login the request authenticated as ("" if none).
	User string
	// Status is the HTTP status answered (0 while the request is in
	// flight, or when the connection was dropped).
	Status int
}

// Hook is a webhook installed on a repository.
type Hook struct {
	ID          int64
	URL         string
	ContentType string
	Secret      string
	Events      []string
	Active      bool
}

// DeployKey is a deploy key installed on a repository.
type DeployKey struct {
	ID       int64
	Title    string
	Key      string
	ReadOnly bool
}

// Status is a commit status posted on a repository.
type Status struct {
	State       string
	Context     string
	Description string
	TargetURL   string
}

// hookRec and statusRec keep what the exported views leave out.
type hookRec struct {
	Hook
	insecureSSL string
}

type statusRec struct {
	Status
	creator string
}

// PullRequest is a pull request opened on a repository.
type PullRequest struct {
	Number int
	Title  string
	Body   string
	// Head and Base are branch names as sent ("owner:branch" heads are
	// reduced to the branch).
	Head    string
	Base    string
	HeadSHA string
	// HTMLURL is the web URL GitHub answers.
	HTMLURL string
	State   string
	// User is the login that opened it.
	User string
}

// New starts a fake GitHub; t.Cleanup closes it. It needs the git command
// and git-http-backend (shipped with git).
func New(t testing.TB) *Server {
	t.Helper()
	return newOn(t, "")
}

// NewOn is New listening on host, an address of this machine, instead of
// 127.0.0.1: for clients that cannot reach the host's loopback, such as
// pods on a test node cloning through a bridge's gateway address.
func NewOn(t testing.TB, host string) *Server {
	t.Helper()
	return newOn(t, host)
}

func newOn(t testing.TB, host string) *Server {
	t.Helper()
	s := &Server{
		t:      t,
		now:    time.Now,
		nextID: 100000,
		users:  map[string]*user{},
		tokens: map[string]string{},
		apps:   map[string]string{},
		codes:  map[string]*oauthCode{},
		repos:  map[string]*Repo{},
	}
	s.git = gitrepo.New(t, gitrepo.Config{
		Committer: "GitHub <noreply@github.com>",
		Clock:     s.clock,
		// Like GitHub: any commit can be fetched by SHA, partial clones work.
		ServeConfig: []string{"uploadpack.allowAnySHA1InWant=true", "uploadpack.allowFilter=true"},
	})
	s.gitH = s.git.Handler("/git/", s.checkGit)
	// URL and APIURL are set before the server starts so that handlers read
	// them without a race.
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	if host != "" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			s.srv.Listener.Close()
			t.Fatalf("fakegithub: listen on %s: %v", host, err)
		}
		s.srv.Listener.Close()
		s.srv.Listener = l
	}
	s.URL = "http://" + s.srv.Listener.Addr().String()
	s.APIURL = s.URL + "/api/v3/"
	s.srv.Start()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server; later requests fail to connect. It is called by
// t.Cleanup and may be called earlier to make GitHub unreachable.
func (s *Server) Close() {
	s.closed.Do(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// SetClock replaces the server's clock (OAuth code expiry, timestamps).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

func (s *Server) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

// AddUser registers a user and a token that authenticates REST and git
// calls as that user ("Authorization: token X", "Bearer X", or basic auth
// with the token as password). Calling it again for the same login adds
// another token; the latest is the one the OAuth exchange answers.
func (s *Server) AddUser(login string, id int64, token string) {
	s.t.Helper()
	if login == "" || id <= 0 {
		s.t.Fatalf("fakegithub: AddUser needs a login and a positive id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := strings.ToLower(login)
	u := s.users[k]
	if u == nil {
		u = &user{login: login, id: id}
		s.users[k] = u
	}
	if token != "" {
		u.token = token
		s.tokens[token] = k
	}
}

// RevokeToken makes token unknown: calls with it answer 401.
func (s *Server) RevokeToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.tokens[token]; ok {
		delete(s.tokens, token)
		if u := s.users[k]; u != nil && u.token == token {
			u.token = ""
		}
	}
}

// AddOAuthApp registers an OAuth application.
func (s *Server) AddOAuthApp(clientID, clientSecret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[clientID] = clientSecret
}

// IssueCode returns an OAuth code for login under clientID, as GitHub's
// authorize page would after the user approved: usable once, for 10
// minutes, with any redirect_uri.
func (s *Server) IssueCode(login, clientID string) string {
	s.t.Helper()
	code, err := s.issueCode(login, clientID, "", "")
	if err != nil {
		s.t.Fatalf("fakegithub: IssueCode: %v", err)
	}
	return code
}

func (s *Server) issueCode(login, clientID, redirectURI, scope string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[strings.ToLower(login)] == nil {
		return "", fmt.Errorf("unknown user %q", login)
	}
	if _, ok := s.apps[clientID]; !ok {
		return "", fmt.Errorf("unknown OAuth app %q", clientID)
	}
	if scope == "" {
		scope = "admin:repo_hook,repo,user"
	}
	code := randomHex(10)
	s.codes[code] = &oauthCode{login: strings.ToLower(login), clientID: clientID, redirectURI: redirectURI,
		scope: scope, expires: s.now().Add(10 * time.Minute)}
	return code, nil
}

// AuthorizeAs makes GET /login/oauth/authorize approve at once as login and
// redirect to redirect_uri with a fresh code and the state; "" shows a page
// instead (a user who has not approved yet).
func (s *Server) AuthorizeAs(login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorizeAs = login
}

// Grant sets login's permission on owner/name: "admin", "push" (also
// "write", "maintain"), "read" (also "pull", "triage") or "" / "none".
func (s *Server) Grant(login, owner, name, perm string) {
	s.t.Helper()
	p, ok := parsePerm(perm)
	if !ok {
		s.t.Fatalf("fakegithub: Grant: unknown permission %q", perm)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoKey(owner, name)]
	if r == nil {
		s.t.Fatalf("fakegithub: Grant: no repository %s/%s", owner, name)
		return
	}
	r.grants[strings.ToLower(login)] = p
}

// Repo returns the repository added as owner/name (case-insensitive), or nil.
func (s *Server) Repo(owner, name string) *Repo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[repoKey(owner, name)]
}

// Hooks returns the webhooks installed on owner/name, oldest first.
func (s *Server) Hooks(owner, name string) []Hook {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoKey(owner, name)]
	if r == nil {
		return nil
	}
	out := make([]Hook, len(r.hooks))
	for i, h := range r.hooks {
		out[i] = h.Hook
		out[i].Events = append([]string(nil), h.Events...)
	}
	return out
}

// DeployKeys returns the deploy keys installed on owner/name, oldest first.
func (s *Server) DeployKeys(owner, name string) []DeployKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoKey(owner, name)]
	if r == nil {
		return nil
	}
	return append([]DeployKey(nil), r.keys...)
}

// Statuses returns the commit statuses posted on sha, in the order posted.
func (s *Server) Statuses(owner, name, sha string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoKey(owner, name)]
	if r == nil {
		return nil
	}
	var out []Status
	for _, st := range r.statuses[strings.ToLower(sha)] {
		out = append(out, st.Status)
	}
	return out
}

// PullRequests returns the pull requests opened on owner/name, by number.
func (s *Server) PullRequests(owner, name string) []PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoKey(owner, name)]
	if r == nil {
		return nil
	}
	return append([]PullRequest(nil), r.pulls...)
}

// FailNext makes the next request whose method matches (case-insensitive;
// "" matches any) and whose path contains pathContains answer status with
// body instead (default body: {"message": <status text>}). Several calls
// queue up, each used once. A 403 whose body mentions "rate limit" also
// carries X-RateLimit-Remaining: 0 (GitHub's primary rate limit); a 429
// carries Retry-After: 60. It applies to REST, OAuth and git requests.
func (s *Server) FailNext(method, pathContains string, status int, body string) {
	h := http.Header{}
	switch {
	case status == http.StatusForbidden && strings.Contains(strings.ToLower(body), "rate limit"):
		h = rateLimitHeader(s.clock(), 0)
	case status == http.StatusTooManyRequests:
		h.Set("Retry-After", "60")
	}
	s.FailNextWith(method, pathContains, status, h, body)
}

// FailNextWith is FailNext with exact response headers.
func (s *Server) FailNextWith(method, pathContains string, status int, header http.Header, body string) {
	if body == "" {
		b, _ := json.Marshal(map[string]string{"message": http.StatusText(status)}) // cannot fail
		body = string(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, failure{method: method, pathContains: pathContains, status: status,
		header: header.Clone(), body: body})
}

// RateLimitNext makes the next matching request answer GitHub's primary
// rate limit: 403, X-RateLimit-Remaining: 0, X-RateLimit-Reset in a minute.
func (s *Server) RateLimitNext(method, pathContains string) {
	s.FailNextWith(method, pathContains, http.StatusForbidden, rateLimitHeader(s.clock(), 0),
		`{"message":"API rate limit exceeded for user ID 1.","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}`)
}

// SecondaryRateLimitNext makes the next matching request answer GitHub's
// secondary rate limit: 403 with Retry-After: 60.
func (s *Server) SecondaryRateLimitNext(method, pathContains string) {
	h := http.Header{}
	h.Set("Retry-After", "60")
	s.FailNextWith(method, pathContains, http.StatusForbidden, h,
		`{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`)
}

// SetDown makes every request answer 503 while down is true.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// SetDropConnections makes every request's connection close without an
// answer while drop is true (a network failure, as the client sees it).
func (s *Server) SetDropConnections(drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = drop
}

// Requests returns every request received so far, oldest first.
func (s *Server) Requests() []RecordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RecordedRequest(nil), s.requests...)
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveHTTP records the request, applies the injected faults and routes it.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	caller, badToken := s.authenticate(r)
	login := ""
	if caller != nil {
		login = caller.login
	}
	s.mu.Lock()
	idx := len(s.requests)
	s.requests = append(s.requests, RecordedRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, User: login})
	drop, down := s.drop, s.down
	var fail *failure
	if !drop && !down {
		for i, f := range s.failures {
			if (f.method == "" || strings.EqualFold(f.method, r.Method)) && strings.Contains(r.URL.Path, f.pathContains) {
				fail = &f
				s.failures = append(s.failures[:i:i], s.failures[i+1:]...)
				break
			}
		}
	}
	s.mu.Unlock()

	rec := &statusRecorder{ResponseWriter: w}
	defer func() {
		s.mu.Lock()
		if idx < len(s.requests) {
			s.requests[idx].Status = rec.status
		}
		s.mu.Unlock()
	}()

	switch {
	case drop:
		dropConnection(w)
		return
	case down:
		writeJSON(rec, http.StatusServiceUnavailable, map[string]string{"message": "Service Unavailable"})
		return
	case fail != nil:
		for k, v := range fail.header {
			rec.Header()[k] = v
		}
		if rec.Header().Get("Content-Type") == "" {
			rec.Header().Set("Content-Type", "application/json; charset=utf-8")
		}
		rec.WriteHeader(fail.status)
		_, _ = rec.Write([]byte(fail.body)) // the client may have gone; nothing to do
		return
	}

	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/v3/"):
		s.serveAPI(rec, r, caller, badToken)
	case p == "/login/oauth/authorize":
		s.serveAuthorize(rec, r)
	case p == "/login/oauth/access_token":
		s.serveAccessToken(rec, r)
	case strings.HasPrefix(p, "/git/"):
		s.gitH.ServeHTTP(rec, r)
	default:
		writeJSON(rec, http.StatusNotFound, map[string]string{"message": "Not Found"})
	}
}

func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // best effort: a reset rather than a clean close
	}
	_ = conn.Close() // nothing to report: the point is to fail the client
}

// authenticate resolves the REST Authorization header. badToken is true
// when credentials were presented but are not valid.
func (s *Server) authenticate(r *http.Request) (caller *user, badToken bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, false
	}
	var tok string
	scheme, rest, _ := strings.Cut(h, " ")
	switch strings.ToLower(scheme) {
	case "token", "bearer":
		tok = strings.TrimSpace(rest)
	case "basic":
		_, pw, ok := r.BasicAuth()
		if !ok {
			return nil, true
		}
		tok = pw
	default:
		return nil, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.tokens[tok]
	if !ok || tok == "" {
		return nil, true
	}
	return s.users[k], false
}

func (s *Server) userByToken(tok string) *user {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.tokens[tok]
	if !ok || tok == "" {
		return nil
	}
	return s.users[k]
}

// perm levels.
const (
	permNone = iota
	permRead
	permPush
	permAdmin
)

func parsePerm(p string) (int, bool) {
	switch strings.ToLower(p) {
	case "", "none":
		return permNone, true
	case "read", "pull", "triage":
		return permRead, true
	case "push", "write", "maintain":
		return permPush, true
	case "admin":
		return permAdmin, true
	}
	return 0, false
}

// permOf is u's permission on r; s.mu must be held.
func (r *Repo) permOf(u *user) int {
	if u == nil {
		return permNone
	}
	k := strings.ToLower(u.login)
	if p, ok := r.grants[k]; ok {
		return p
	}
	if k == strings.ToLower(r.Owner) {
		return permAdmin
	}
	return permNone
}

func repoKey(owner, name string) string {
	return strings.ToLower(owner) + "/" + strings.ToLower(name)
}

func rateLimitHeader(now time.Time, remaining int) http.Header {
	h := http.Header{}
	h.Set("X-RateLimit-Limit", "5000")
	h.Set("X-RateLimit-Remaining", fmt.Sprint(remaining))
	h.Set("X-RateLimit-Used", fmt.Sprint(5000-remaining))
	h.Set("X-RateLimit-Reset", fmt.Sprint(now.Add(time.Minute).Unix()))
	h.Set("X-RateLimit-Resource", "core")
	return h
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"message":"fakegithub: cannot encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client may have gone; nothing to do
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
