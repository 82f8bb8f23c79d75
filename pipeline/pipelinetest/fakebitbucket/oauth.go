package fakebitbucket

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// SignIn makes username the user signed in to Bitbucket in the "browser"
// that /site/oauth2/authorize sees: it grants the consumer at once.
func (s *Server) SignIn(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.browser = username
}

// Code issues an authorization code for username, as if they had
// authorized the consumer.
func (s *Server) Code(username string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := "code-" + randHex(12)
	s.codes[c] = username
	return c
}

// serveAuthorize: GET /site/oauth2/authorize?client_id&response_type=code
// &state[&redirect_uri] redirects to the callback with code and state.
func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != s.ClientID || q.Get("response_type") != "code" {
		http.Error(w, "Invalid client_id or response_type", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	user := s.browser
	s.mu.Unlock()
	if user == "" {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	cb := q.Get("redirect_uri")
	if cb == "" {
		http.Error(w, "the fake has no consumer callback URL: pass redirect_uri", http.StatusBadRequest)
		return
	}
	u, err := url.Parse(cb)
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	v := u.Query()
	v.Set("code", s.Code(user))
	if st := q.Get("state"); st != "" {
		v.Set("state", st)
	}
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// serveAccessToken: POST /site/oauth2/access_token, form body, consumer
// key and secret as HTTP Basic; grants authorization_code and
// refresh_token. Every refresh rotates the refresh token.
func (s *Server) serveAccessToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok || id != s.ClientID || secret != s.ClientSecret {
		oauthError(w, http.StatusBadRequest, "invalid_client", "Invalid OAuth client credentials")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	s.mu.Lock()
	delay := s.refreshDelay
	s.mu.Unlock()
	if r.PostForm.Get("grant_type") == "refresh_token" && delay > 0 {
		time.Sleep(delay) // a slow token endpoint: lets concurrent refreshes overlap
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var user string
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		c := r.PostForm.Get("code")
		user = s.codes[c]
		delete(s.codes, c)
		if user == "" {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "The authorization code is invalid or expired.")
			return
		}
		s.exchanges++
	case "refresh_token":
		s.refreshTries++
		rt := r.PostForm.Get("refresh_token")
		user = s.refresh[rt]
		if user == "" {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid refresh_token")
			return
		}
		delete(s.refresh, rt)
		s.refreshes++
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "unsupported grant type")
		return
	}
	at, rt := "at-"+randHex(16), "rt-"+randHex(16)
	s.access[at] = accessRec{user: user, expiry: time.Now().Add(s.tokenTTL)}
	s.refresh[rt] = user
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": at, "refresh_token": rt, "expires_in": int(s.tokenTTL / time.Second),
		"scopes": "account email repository repository:admin webhook pullrequest:write", "token_type": "bearer",
		"state": r.PostForm.Get("grant_type"),
	})
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// SetRefreshDelay makes the token endpoint answer refresh_token grants
// after d, so that two clients refreshing at once overlap.
func (s *Server) SetRefreshDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshDelay = d
}

// IssueToken issues an access and refresh token for username directly, as
// a completed authorization_code grant would.
func (s *Server) IssueToken(username string) (access, refresh string, expiry time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	access, refresh = "at-"+randHex(16), "rt-"+randHex(16)
	expiry = time.Now().Add(s.tokenTTL)
	s.access[access] = accessRec{user: username, expiry: expiry}
	s.refresh[refresh] = username
	return access, refresh, expiry
}
