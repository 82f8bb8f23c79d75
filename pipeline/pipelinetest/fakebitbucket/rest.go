package fakebitbucket

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// page answers one page of values (?page=N, 1-based) with "next" when
// more follow.
func (s *Server) page(w http.ResponseWriter, r *http.Request, values []any) {
	s.mu.Lock()
	n := s.pageLen
	s.mu.Unlock()
	if pl, err := strconv.Atoi(r.URL.Query().Get("pagelen")); err == nil && pl > 0 && pl <= 100 && pl < n {
		n = pl
	}
	pg, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || pg < 1 {
		pg = 1
	}
	lo := min((pg-1)*n, len(values))
	hi := min(lo+n, len(values))
	out := map[string]any{"size": len(values), "page": pg, "pagelen": n, "values": values[lo:hi]}
	if hi < len(values) {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(pg+1))
		out["next"] = s.URL + r.URL.Path + "?" + q.Encode()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) userJSON(u *User) map[string]any {
	return map[string]any{"type": "user", "uuid": u.UUID, "username": u.Username, "display_name": u.DisplayName,
		"account_id": u.AccountID, "links": map[string]any{"avatar": map[string]string{"href": s.URL + "/avatar/" + u.Username}}}
}

func (s *Server) repoJSON(r *Repo, viewer string) map[string]any {
	host := strings.TrimPrefix(s.URL, "http://")
	return map[string]any{
		"type": "repository", "uuid": r.UUID, "full_name": r.Workspace + "/" + r.Slug, "name": r.Slug, "slug": r.Slug,
		"is_private": true, "scm": "git",
		"mainbranch": map[string]string{"type": "branch", "name": "main"},
		"workspace":  map[string]string{"type": "workspace", "slug": r.Workspace, "name": r.Workspace},
		"links": map[string]any{
			"avatar": map[string]string{"href": s.URL + "/avatar/" + r.Workspace + "/" + r.Slug},
			"html":   map[string]string{"href": s.URL + "/" + r.Workspace + "/" + r.Slug},
			"clone": []map[string]string{
				{"name": "https", "href": "http://" + viewer + "@" + host + "/git/" + r.Workspace + "/" + r.Slug + ".git"},
				{"name": "ssh", "href": "git@" + host + ":" + r.Workspace + "/" + r.Slug + ".git"},
			},
		},
	}
}

// visible lists the repositories u has a permission on, sorted.
func (s *Server) visible(u *User) []*Repo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Repo
	for _, r := range s.repos {
		if r.perms[u.Username] != "" {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Workspace+"/"+out[i].Slug < out[j].Workspace+"/"+out[j].Slug
	})
	return out
}

func (s *Server) serveREST(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests[r.URL.Path]++
	s.mu.Unlock()
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	u := (*User)(nil)
	if ok {
		u = s.userByToken(tok)
	}
	if u == nil {
		apiError(w, http.StatusUnauthorized, "Access token expired. Use your refresh token to obtain a new access token.")
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/2.0/"), "/"), "/")
	serveRoute(s, w, r, restRoutes, call{u: u, parts: parts})
}

// call is what a route's handler gets: the caller, and for a repository's
// routes the repository and the caller's permission on it; parts are the
// path's segments (below /2.0/, or below the repository's).
type call struct {
	u     *User
	rp    *Repo
	perm  string // read | write | admin
	parts []string
}

// route serves the requests whose method ("" = any) and path segments
// match: pattern's segments are literal, "*" for any one segment, and a
// final "**" for any number. need ("write" or "admin") is the permission
// on the repository a route needs.
type route struct {
	method  string
	pattern string
	need    string
	h       func(s *Server, w http.ResponseWriter, r *http.Request, c call)
}

func (rt route) matches(method string, parts []string) bool {
	if rt.method != "" && rt.method != method {
		return false
	}
	var pat []string
	if rt.pattern != "" {
		pat = strings.Split(rt.pattern, "/")
	}
	if n := len(pat); n > 0 && pat[n-1] == "**" {
		pat = pat[:n-1]
		if len(parts) < len(pat) {
			return false
		}
		parts = parts[:len(pat)]
	}
	if len(parts) != len(pat) {
		return false
	}
	for i, p := range pat {
		if p != "*" && p != parts[i] {
			return false
		}
	}
	return true
}

// serveRoute serves c with the first of routes that matches, after
// checking the permission it needs.
func serveRoute(s *Server, w http.ResponseWriter, r *http.Request, routes []route, c call) {
	for _, rt := range routes {
		if !rt.matches(r.Method, c.parts) {
			continue
		}
		switch {
		case rt.need == "write" && c.perm != "write" && c.perm != "admin":
			apiError(w, http.StatusForbidden, "write access required")
		case rt.need == "admin" && c.perm != "admin":
			apiError(w, http.StatusForbidden, "admin access required")
		default:
			rt.h(s, w, r, c)
		}
		return
	}
	apiError(w, http.StatusNotFound, "Resource not found")
}

var restRoutes = []route{
	{"", "user", "", func(s *Server, w http.ResponseWriter, r *http.Request, c call) {
		writeJSON(w, http.StatusOK, s.userJSON(c.u))
	}},
	{"", "user/workspaces", "", (*Server).listWorkspaces},
	{"", "user/workspaces/*/permissions/repositories", "", (*Server).listPermissions},
	{"", "repositories/*", "", (*Server).listRepositories},
	{"", "repositories/*/*/**", "", (*Server).serveRepo},
}

func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request, c call) {
	seen := map[string]bool{}
	var vals []any
	for _, rp := range s.visible(c.u) {
		if !seen[rp.Workspace] {
			seen[rp.Workspace] = true
			vals = append(vals, map[string]any{"type": "workspace_access", "workspace": map[string]string{"type": "workspace", "slug": rp.Workspace, "name": rp.Workspace}})
		}
	}
	s.page(w, r, vals)
}

var fullNameQ = regexp.MustCompile(`^repository\.full_name\s*=\s*"([^"]+)"$`)

func (s *Server) listPermissions(w http.ResponseWriter, r *http.Request, c call) {
	m := fullNameQ.FindStringSubmatch(r.URL.Query().Get("q"))
	var vals []any
	for _, rp := range s.visible(c.u) {
		if rp.Workspace != c.parts[2] || (m != nil && m[1] != rp.Workspace+"/"+rp.Slug) {
			continue
		}
		s.mu.Lock()
		perm := rp.perms[c.u.Username]
		s.mu.Unlock()
		vals = append(vals, map[string]any{"type": "repository_permission", "permission": perm,
			"repository": map[string]string{"type": "repository", "full_name": rp.Workspace + "/" + rp.Slug, "uuid": rp.UUID},
			"user":       s.userJSON(c.u)})
	}
	s.page(w, r, vals)
}

func (s *Server) listRepositories(w http.ResponseWriter, r *http.Request, c call) {
	if r.URL.Query().Get("role") != "member" {
		apiError(w, http.StatusBadRequest, "the fake only lists role=member")
		return
	}
	var vals []any
	for _, rp := range s.visible(c.u) {
		if rp.Workspace == c.parts[1] {
			vals = append(vals, s.repoJSON(rp, c.u.Username))
		}
	}
	s.page(w, r, vals)
}

// serveRepo serves /2.0/repositories/{ws}/{slug}/... (repoRoutes) to a
// caller with a permission on the repository; to anyone else the
// repository does not exist.
func (s *Server) serveRepo(w http.ResponseWriter, r *http.Request, c call) {
	ws, slug := c.parts[1], c.parts[2]
	s.mu.Lock()
	rp := s.repos[ws+"/"+slug]
	perm := ""
	if rp != nil {
		perm = rp.perms[c.u.Username]
	}
	s.mu.Unlock()
	if perm == "" {
		apiError(w, http.StatusNotFound, "Repository "+ws+"/"+slug+" not found")
		return
	}
	serveRoute(s, w, r, repoRoutes, call{u: c.u, rp: rp, perm: perm, parts: c.parts[3:]})
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{4,40}$`)

var repoRoutes = []route{
	{http.MethodGet, "", "", func(s *Server, w http.ResponseWriter, r *http.Request, c call) {
		writeJSON(w, http.StatusOK, s.repoJSON(c.rp, c.u.Username))
	}},
	{http.MethodGet, "src/*/**", "", (*Server).getSrc},
	{http.MethodPost, "src", "write", func(s *Server, w http.ResponseWriter, r *http.Request, c call) {
		s.postSrc(w, r, c.rp)
	}},
	{http.MethodGet, "refs/branches/*", "", (*Server).getBranch},
	{http.MethodPost, "refs/branches", "", (*Server).createBranch},
	{http.MethodPost, "pullrequests", "", (*Server).createPullRequest},
	{http.MethodGet, "commit/*", "", (*Server).getCommit},
	{http.MethodPost, "commit/*/statuses/build", "", (*Server).postStatus},
	{"", "hooks/**", "admin", func(s *Server, w http.ResponseWriter, r *http.Request, c call) {
		s.serveHooks(w, r, c.rp, c.parts[1:])
	}},
	{"", "deploy-keys/**", "admin", func(s *Server, w http.ResponseWriter, r *http.Request, c call) {
		s.serveKeys(w, r, c.rp, c.parts[1:])
	}},
}

func (s *Server) getSrc(w http.ResponseWriter, r *http.Request, c call) {
	rp, rest := c.rp, c.parts
	ref, _ := url.PathUnescape(rest[1])
	sha, err := rp.Resolve(ref)
	if err != nil {
		if sha, err = rp.Resolve("refs/heads/" + ref); err != nil {
			apiError(w, http.StatusNotFound, "Commit not found")
			return
		}
	}
	content, ok := rp.File(sha, strings.Join(rest[2:], "/"))
	if !ok {
		apiError(w, http.StatusNotFound, "No such file or directory: "+strings.Join(rest[2:], "/"))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, content)
}

func (s *Server) getBranch(w http.ResponseWriter, r *http.Request, c call) {
	name := c.parts[2]
	sha := c.rp.Head(name)
	if sha == "" {
		apiError(w, http.StatusNotFound, "Branch not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"type": "branch", "name": name, "target": map[string]string{"type": "commit", "hash": sha}})
}

func (s *Server) createBranch(w http.ResponseWriter, r *http.Request, c call) {
	var in struct {
		Name   string `json:"name"`
		Target struct {
			Hash string `json:"hash"`
		} `json:"target"`
	}
	write := c.perm == "admin" || c.perm == "write"
	if !write || json.NewDecoder(r.Body).Decode(&in) != nil || in.Name == "" {
		apiError(w, http.StatusBadRequest, "bad branch")
		return
	}
	if err := c.rp.CreateRef("refs/heads/"+in.Name, in.Target.Hash); err != nil {
		apiError(w, http.StatusBadRequest, "cannot create branch")
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"name": in.Name, "target": map[string]string{"hash": in.Target.Hash}})
}

func (s *Server) createPullRequest(w http.ResponseWriter, r *http.Request, c call) {
	rp := c.rp
	var in struct {
		Title  string `json:"title"`
		Source struct {
			Branch struct{ Name string } `json:"branch"`
		} `json:"source"`
		Destination struct {
			Branch struct{ Name string } `json:"branch"`
		} `json:"destination"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil || in.Title == "" || in.Source.Branch.Name == "" {
		apiError(w, http.StatusBadRequest, "bad pull request")
		return
	}
	s.mu.Lock()
	id := len(rp.pulls) + 1
	rp.pulls = append(rp.pulls, PullRequest{ID: id, Title: in.Title, Source: in.Source.Branch.Name, Dest: in.Destination.Branch.Name})
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "links": map[string]any{"html": map[string]string{"href": fmt.Sprintf("%s/%s/%s/pull-requests/%d", s.URL, rp.Workspace, rp.Slug, id)}}})
}

func (s *Server) getCommit(w http.ResponseWriter, r *http.Request, c call) {
	if !hexRE.MatchString(c.parts[1]) {
		apiError(w, http.StatusNotFound, "Commit not found")
		return
	}
	sha, err := c.rp.Resolve(c.parts[1])
	if err != nil {
		apiError(w, http.StatusNotFound, "Commit not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"type": "commit", "hash": sha})
}

func (s *Server) postStatus(w http.ResponseWriter, r *http.Request, c call) {
	rp := c.rp
	var st struct {
		Key, State, Name, URL, Description, Refname string
	}
	if json.NewDecoder(r.Body).Decode(&st) != nil || st.Key == "" || len(st.Key) > 40 || st.URL == "" {
		apiError(w, http.StatusBadRequest, "key (≤ 40 characters), state and url are required")
		return
	}
	switch st.State {
	case "INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED":
	default:
		apiError(w, http.StatusBadRequest, "bad state")
		return
	}
	s.mu.Lock()
	rp.statuses[c.parts[1]] = append(rp.statuses[c.parts[1]], Status(st))
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"type": "build", "key": st.Key, "state": st.State})
}

func (s *Server) serveHooks(w http.ResponseWriter, r *http.Request, rp *Repo, rest []string) {
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		var in struct {
			Description, URL, Secret string
			Active                   bool
			Events                   []string
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil || in.URL == "" || len(in.Events) == 0 {
			apiError(w, http.StatusBadRequest, "url and events are required")
			return
		}
		h := Hook{UUID: "{" + uuid() + "}", URL: in.URL, Description: in.Description, Secret: in.Secret, Events: in.Events, Active: in.Active}
		s.mu.Lock()
		rp.hooks = append(rp.hooks, h)
		s.mu.Unlock()
		writeJSON(w, http.StatusCreated, hookJSON(h))
	case len(rest) == 0 && r.Method == http.MethodGet:
		var vals []any
		for _, h := range rp.Hooks() {
			vals = append(vals, hookJSON(h))
		}
		s.page(w, r, vals)
	case len(rest) == 1 && r.Method == http.MethodDelete:
		id, _ := url.PathUnescape(rest[0])
		deleteItem(s, w, &rp.hooks, func(h Hook) bool { return h.UUID == id }, "Webhook not found")
	default:
		apiError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// deleteItem removes the first of *items that match accepts and answers
// 204, or answers 404 with missing when none does.
func deleteItem[T any](s *Server, w http.ResponseWriter, items *[]T, match func(T) bool, missing string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(*items, match)
	if i < 0 {
		apiError(w, http.StatusNotFound, missing)
		return
	}
	*items = slices.Delete(*items, i, i+1)
	w.WriteHeader(http.StatusNoContent)
}

func hookJSON(h Hook) map[string]any {
	// The secret is never returned, only whether one is set.
	return map[string]any{"type": "webhook_subscription", "uuid": h.UUID, "url": h.URL, "description": h.Description,
		"active": h.Active, "events": h.Events, "secret_set": h.Secret != ""}
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request, rp *Repo, rest []string) {
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		var in struct{ Key, Label string }
		if json.NewDecoder(r.Body).Decode(&in) != nil || !strings.HasPrefix(in.Key, "ssh-") {
			apiError(w, http.StatusBadRequest, "key is required")
			return
		}
		s.mu.Lock()
		rp.nextKey++
		k := DeployKey{ID: rp.nextKey, Key: in.Key, Label: in.Label}
		rp.keys = append(rp.keys, k)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"type": "deploy_key", "id": k.ID, "key": k.Key, "label": k.Label})
	case len(rest) == 1 && r.Method == http.MethodDelete:
		id, _ := strconv.Atoi(rest[0])
		deleteItem(s, w, &rp.keys, func(k DeployKey) bool { return k.ID == id }, "Deploy key not found")
	default:
		apiError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// postSrc: POST /src, multipart form: each field named after a file path
// is that file's new content; message and branch. Answers 201 with the
// new commit in Location.
func (s *Server) postSrc(w http.ResponseWriter, r *http.Request, rp *Repo) {
	if err := r.ParseMultipartForm(1 << 20); err != nil {
		apiError(w, http.StatusBadRequest, "multipart form expected")
		return
	}
	files := map[string]string{}
	var msg, branch string
	for k, v := range r.MultipartForm.Value {
		switch k {
		case "message":
			msg = v[0]
		case "branch":
			branch = v[0]
		case "author", "parents", "files":
		default:
			files[k] = v[0]
		}
	}
	for k, fhs := range r.MultipartForm.File {
		f, err := fhs[0].Open()
		if err != nil {
			apiError(w, http.StatusBadRequest, "bad file")
			return
		}
		b, _ := io.ReadAll(f)
		f.Close()
		files[k] = string(b)
	}
	if branch == "" {
		branch = "main"
	}
	if msg == "" {
		msg = "Edited online with Bitbucket"
	}
	sha, err := rp.CommitChanges(branch, gitrepo.Changes(files), msg, committer)
	if err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Location", fmt.Sprintf("%s/2.0/repositories/%s/%s/commit/%s", s.URL, rp.Workspace, rp.Slug, sha))
	w.WriteHeader(http.StatusCreated)
}
