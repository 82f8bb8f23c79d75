package fakegithub

import (
	"encoding/json"
	"html"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// serveAuthorize is GitHub's authorize page. With AuthorizeAs set it
// approves at once and redirects back with a code and the state.
func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	clientID := q.Get("client_id")
	s.mu.Lock()
	_, known := s.apps[clientID]
	as := s.authorizeAs
	s.mu.Unlock()
	if !known {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	if as == "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>Authorize application</title><p>fakegithub: authorize " +
			html.EscapeString(clientID) + "</p>")) // the client may have gone; nothing to do
		return
	}
	redirect := q.Get("redirect_uri")
	target, err := url.Parse(redirect)
	if redirect == "" || err != nil || !target.IsAbs() {
		http.Error(w, "The redirect_uri MUST match the registered callback URL for this application.", http.StatusBadRequest)
		return
	}
	code, err := s.issueCode(as, clientID, redirect, q.Get("scope"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tq := target.Query()
	tq.Set("code", code)
	if st := q.Get("state"); st != "" {
		tq.Set("state", st)
	}
	target.RawQuery = tq.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

// serveAccessToken exchanges a code for a token, answering errors with
// HTTP 200 as GitHub does.
func (s *Server) serveAccessToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	params := map[string]string{}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")) // a bad type reads as form
	if ct == "application/json" {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&params); err != nil {
			oauthReply(w, r, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "Problems parsing JSON"})
			return
		}
	} else {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			oauthReply(w, r, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "Problems parsing the form"})
			return
		}
		for k := range r.Form {
			params[k] = r.Form.Get(k)
		}
	}
	clientID, secret := params["client_id"], params["client_secret"]
	if id, sec, ok := r.BasicAuth(); ok {
		// golang.org/x/oauth2 escapes both parts before basic auth.
		if v, err := url.QueryUnescape(id); err == nil {
			id = v
		}
		if v, err := url.QueryUnescape(sec); err == nil {
			sec = v
		}
		clientID, secret = id, sec
	}

	s.mu.Lock()
	want, known := s.apps[clientID]
	if !known || secret == "" || secret != want {
		s.mu.Unlock()
		oauthReply(w, r, http.StatusOK, map[string]string{
			"error":             "incorrect_client_credentials",
			"error_description": "The client_id and/or client_secret passed are incorrect.",
			"error_uri":         "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials",
		})
		return
	}
	c := s.codes[params["code"]]
	if c == nil || c.used || c.clientID != clientID || !s.now().Before(c.expires) {
		s.mu.Unlock()
		oauthReply(w, r, http.StatusOK, map[string]string{
			"error":             "bad_verification_code",
			"error_description": "The code passed is incorrect or expired.",
			"error_uri":         "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
		})
		return
	}
	if ru := params["redirect_uri"]; ru != "" && c.redirectURI != "" && ru != c.redirectURI {
		s.mu.Unlock()
		oauthReply(w, r, http.StatusOK, map[string]string{
			"error":             "redirect_uri_mismatch",
			"error_description": "The redirect_uri MUST match the registered callback URL for this application.",
			"error_uri":         "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch",
		})
		return
	}
	c.used = true
	u := s.users[c.login]
	if u.token == "" {
		u.token = "gho_" + randomHex(18)
		s.tokens[u.token] = c.login
	}
	tok, scope := u.token, c.scope
	s.mu.Unlock()
	oauthReply(w, r, http.StatusOK, map[string]string{"access_token": tok, "token_type": "bearer", "scope": scope})
}

// oauthReply answers JSON when the client accepts it, else a form body as
// GitHub does by default.
func oauthReply(w http.ResponseWriter, r *http.Request, status int, v map[string]string) {
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, status, v)
		return
	}
	form := url.Values{}
	for k, val := range v {
		form.Set(k, val)
	}
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(form.Encode())) // the client may have gone; nothing to do
}
