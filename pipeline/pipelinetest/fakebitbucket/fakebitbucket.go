// Package fakebitbucket is a protocol-level stand-in for Bitbucket Cloud
// in tests: an httptest server speaking the OAuth 2.0 consumer flow
// (/site/oauth2/authorize and /site/oauth2/access_token, with access
// tokens that expire and refresh tokens that rotate on every use), the
// REST 2.0 calls Kontinuous makes (under /2.0, paged with "next"), git
// smart HTTP for clones with the user x-token-auth (git's own
// git-http-backend over real bare repositories) and signed webhook
// deliveries. Nothing in it is a mock of Kontinuous' code: a forge client
// talks to it exactly as it would to bitbucket.org.
package fakebitbucket

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// Server is a fake Bitbucket Cloud. URL is the web base (--bitbucket-url),
// APIURL the REST base (--bitbucket-api-url).
type Server struct {
	URL    string
	APIURL string
	// ClientID and ClientSecret are the OAuth consumer's key and secret.
	ClientID     string
	ClientSecret string

	t    testing.TB
	srv  *httptest.Server
	git  *gitrepo.Root
	gitH http.Handler // git smart HTTP under /git/

	mu           sync.Mutex
	tokenTTL     time.Duration
	pageLen      int
	browser      string               // the user signed in to the "browser"
	users        map[string]*User     // by username
	codes        map[string]string    // authorization code -> username
	access       map[string]accessRec // access token -> owner and expiry
	refresh      map[string]string    // live refresh token -> username
	repos        map[string]*Repo     // "ws/slug" lower-case
	refreshes    int                  // refresh_token grants answered with a new pair
	exchanges    int                  // authorization_code grants answered
	refreshTries int
	refreshDelay time.Duration  // refresh_token grants asked for, refused or not
	requests     map[string]int // REST path -> count
}

type accessRec struct {
	user   string
	expiry time.Time
}

// User is a Bitbucket account.
type User struct {
	// UUID in braces, as Bitbucket gives it.
	UUID        string
	Username    string
	DisplayName string
	AccountID   string
}

// New starts a fake Bitbucket Cloud; t.Cleanup closes it. Access tokens
// last two hours (SetTokenTTL changes it), pages hold 10 values
// (SetPageLen). It needs git and git-http-backend.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:        t,
		ClientID: "consumer-key-" + randHex(4), ClientSecret: "consumer-secret-" + randHex(16),
		tokenTTL: 2 * time.Hour, pageLen: 10,
		users: map[string]*User{}, codes: map[string]string{}, access: map[string]accessRec{},
		refresh: map[string]string{}, repos: map[string]*Repo{}, requests: map[string]int{},
	}
	s.git = gitrepo.New(t, gitrepo.Config{Committer: committer, ServeConfig: []string{"uploadpack.allowAnySHA1InWant=true"}})
	s.gitH = s.git.Handler("/git/", s.checkGit)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.URL = "http://" + s.srv.Listener.Addr().String()
	s.APIURL = s.URL + "/2.0"
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/site/oauth2/authorize":
		s.serveAuthorize(w, r)
	case p == "/site/oauth2/access_token":
		s.serveAccessToken(w, r)
	case strings.HasPrefix(p, "/git/"):
		s.gitH.ServeHTTP(w, r)
	case strings.HasPrefix(p, "/2.0/"):
		s.serveREST(w, r)
	default:
		http.NotFound(w, r)
	}
}

// AddUser creates an account and returns it.
func (s *Server) AddUser(username string) *User {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := &User{UUID: "{" + uuid() + "}", Username: username, DisplayName: strings.ToUpper(username[:1]) + username[1:], AccountID: "5f" + randHex(10)}
	s.users[username] = u
	return u
}

// SetTokenTTL sets how long access tokens issued from now on last.
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTTL = d
}

// SetPageLen sets pagelen for the paged lists.
func (s *Server) SetPageLen(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageLen = n
}

// ExpireAccessTokens makes every access token issued so far invalid (as
// two hours passing would).
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, a := range s.access {
		a.expiry = time.Now().Add(-time.Second)
		s.access[k] = a
	}
}

// RevokeRefreshTokens makes every refresh token invalid (the user revoked
// the consumer's access, or the token aged out): the next refresh answers
// invalid_grant.
func (s *Server) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh = map[string]string{}
}

// Refreshes counts refresh_token grants that issued a new pair.
func (s *Server) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// RefreshAttempts counts refresh_token grants asked for, refused or not.
func (s *Server) RefreshAttempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshTries
}

// Requests counts REST requests to path (e.g. "/2.0/user").
func (s *Server) Requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[path]
}

// userByToken returns the owner of a live access token.
func (s *Server) userByToken(tok string) *User {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[tok]
	if !ok || time.Now().After(a.expiry) {
		return nil
	}
	return s.users[a.user]
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func uuid() string {
	h := randHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Users returns the account called username (nil when there is none).
func (s *Server) Users(username string) *User {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[username]
}
