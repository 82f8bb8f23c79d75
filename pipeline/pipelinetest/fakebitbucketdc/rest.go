package fakebitbucketdc

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// serveREST routes /rest/api/latest/... and /rest/keys/latest/... for the
// authenticated user name ("" = anonymous).
func (s *Server) serveREST(w http.ResponseWriter, r *http.Request, name string) {
	p := r.URL.Path
	if p == "/rest/api/latest/application-properties" {
		writeJSON(w, http.StatusOK, map[string]string{"version": "8.19.0", "displayName": "Bitbucket"})
		return
	}
	if name == "" {
		restError(w, http.StatusUnauthorized, "You are not permitted to access this resource")
		return
	}
	switch {
	case p == "/rest/api/latest/users":
		s.listUsers(w, r)
	case strings.HasPrefix(p, "/rest/api/latest/users/"):
		s.getUser(w, strings.TrimPrefix(p, "/rest/api/latest/users/"))
	case p == "/rest/api/latest/repos":
		s.listRepos(w, r, name)
	default:
		s.serveProject(w, r, name)
	}
}

func (s *Server) getUser(w http.ResponseWriter, name string) {
	s.mu.Lock()
	u := s.users[name]
	s.mu.Unlock()
	if u == nil {
		restError(w, http.StatusNotFound, "User does not exist")
		return
	}
	writeJSON(w, http.StatusOK, userJSON(u))
}

// serveProject serves a repository's resources:
// /rest/api/latest/projects/{key}/repos/{slug}/... (repoRoutes) and
// /rest/keys/latest/projects/{key}/repos/{slug}/... (serveKeys).
func (s *Server) serveProject(w http.ResponseWriter, r *http.Request, name string) {
	p := r.URL.Path
	rest, keys := strings.CutPrefix(p, "/rest/keys/latest/projects/")
	if !keys {
		var ok bool
		if rest, ok = strings.CutPrefix(p, "/rest/api/latest/projects/"); !ok {
			restError(w, http.StatusNotFound, "not found")
			return
		}
	}
	parts := strings.SplitN(rest, "/", 4) // KEY, repos, slug, sub
	if len(parts) < 3 || parts[1] != "repos" {
		restError(w, http.StatusNotFound, "not found")
		return
	}
	s.mu.Lock()
	repo := s.repos[repoKey(parts[0], parts[2])]
	perm := 0
	if repo != nil {
		perm = repo.permOf(name)
	}
	s.mu.Unlock()
	if repo == nil || perm == 0 {
		restError(w, http.StatusNotFound, "Repository "+parts[0]+"/"+parts[2]+" does not exist.")
		return
	}
	sub := ""
	if len(parts) == 4 {
		sub = parts[3]
	}
	need := func(level string) bool {
		if perm < permRank[level] {
			restError(w, http.StatusForbidden, "You are not permitted to access this resource")
			return false
		}
		return true
	}
	if keys {
		s.serveKeys(w, r, repo, sub, need)
		return
	}
	for _, rt := range repoRoutes {
		arg, ok := rt.match(sub)
		if !ok || (rt.method != "" && rt.method != r.Method) {
			continue
		}
		if rt.need == "" || need(rt.need) {
			rt.h(s, w, r, repo, arg)
		}
		return
	}
	restError(w, http.StatusNotFound, "not found")
}

// repoRoute is one resource of a repository: the first route whose method
// ("" = any) and sub-path match serves the request, after checking the
// permission it needs ("" = read, which every caller that sees the
// repository has).
type repoRoute struct {
	method string
	match  func(sub string) (arg string, ok bool)
	need   string
	h      func(s *Server, w http.ResponseWriter, r *http.Request, repo *Repo, arg string)
}

// exact matches sub == p.
func exact(p string) func(string) (string, bool) {
	return func(sub string) (string, bool) { return "", sub == p }
}

// prefix matches a sub starting with p; the argument is the rest.
func prefix(p string) func(string) (string, bool) {
	return func(sub string) (string, bool) { return strings.CutPrefix(sub, p) }
}

// between matches a sub starting with p and ending with q; the argument
// is what lies between.
func between(p, q string) func(string) (string, bool) {
	return func(sub string) (string, bool) {
		if !strings.HasPrefix(sub, p) || !strings.HasSuffix(sub, q) {
			return "", false
		}
		return strings.TrimSuffix(strings.TrimPrefix(sub, p), q), true
	}
}

var repoRoutes = []repoRoute{
	{http.MethodGet, exact(""), "", func(s *Server, w http.ResponseWriter, r *http.Request, repo *Repo, _ string) {
		writeJSON(w, http.StatusOK, repo.repoJSON())
	}},
	{"", exact("default-branch"), "", func(s *Server, w http.ResponseWriter, r *http.Request, repo *Repo, _ string) {
		writeJSON(w, http.StatusOK, map[string]any{"id": "refs/heads/" + repo.DefaultBranch, "displayId": repo.DefaultBranch, "type": "BRANCH", "isDefault": true})
	}},
	{"", prefix("raw/"), "", (*Server).getRaw},
	{http.MethodGet, exact("branches"), "", func(s *Server, w http.ResponseWriter, r *http.Request, repo *Repo, _ string) {
		s.listBranches(w, r, repo)
	}},
	{http.MethodPost, exact("branches"), RepoWrite, (*Server).createBranch},
	{http.MethodPost, between("commits/", "/builds"), "", (*Server).postBuild},
	{http.MethodGet, prefix("commits/"), "", (*Server).getCommit},
	{"", exact("webhooks"), RepoAdmin, (*Server).serveWebhooks},
	{http.MethodDelete, prefix("webhooks/"), RepoAdmin, (*Server).deleteWebhook},
	{http.MethodPost, exact("pull-requests"), "", (*Server).createPullRequest},
	{http.MethodPut, prefix("browse/"), RepoWrite, (*Server).putFile},
}

func (s *Server) getRaw(w http.ResponseWriter, r *http.Request, repo *Repo, path string) {
	at := r.URL.Query().Get("at")
	if at == "" {
		at = "refs/heads/" + repo.DefaultBranch
	}
	c, ok := repo.File(at, path)
	if !ok {
		restError(w, http.StatusNotFound, "The path does not exist at revision "+at)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(c))
}

func (s *Server) createBranch(w http.ResponseWriter, r *http.Request, repo *Repo, _ string) {
	var in struct{ Name, StartPoint string }
	if json.NewDecoder(r.Body).Decode(&in) != nil || !gitrepo.ValidBranch(in.Name) {
		restError(w, http.StatusBadRequest, "invalid branch")
		return
	}
	sha, err := repo.Resolve(in.StartPoint)
	if err == nil {
		err = repo.CreateRef("refs/heads/"+in.Name, sha)
	}
	if err != nil {
		restError(w, http.StatusConflict, "cannot create branch")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": "refs/heads/" + in.Name, "displayId": in.Name, "latestCommit": sha})
}

func (s *Server) postBuild(w http.ResponseWriter, r *http.Request, repo *Repo, sha string) {
	var st BuildStatus
	if json.NewDecoder(r.Body).Decode(&st) != nil || st.Key == "" ||
		!map[string]bool{"INPROGRESS": true, "SUCCESSFUL": true, "FAILED": true, "CANCELLED": true}[st.State] {
		restError(w, http.StatusBadRequest, "invalid build status")
		return
	}
	if _, err := repo.Resolve(sha); err != nil {
		restError(w, http.StatusNotFound, "commit does not exist")
		return
	}
	s.mu.Lock()
	repo.builds[sha] = append(repo.builds[sha], st)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getCommit(w http.ResponseWriter, r *http.Request, repo *Repo, ref string) {
	sha, err := repo.Resolve(ref)
	if err != nil {
		restError(w, http.StatusNotFound, "commit does not exist")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": sha, "displayId": sha[:11]})
}

// serveWebhooks lists the webhooks (GET) or creates one (any other
// method).
func (s *Server) serveWebhooks(w http.ResponseWriter, r *http.Request, repo *Repo, _ string) {
	if r.Method == http.MethodGet {
		s.mu.Lock()
		hooks := append([]Hook(nil), repo.hooks...)
		s.mu.Unlock()
		page(w, r, hooks)
		return
	}
	var in struct {
		Name          string
		URL           string
		Events        []string
		Active        bool
		Configuration struct{ Secret string }
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil || in.URL == "" || len(in.Events) == 0 {
		restError(w, http.StatusBadRequest, "invalid webhook")
		return
	}
	s.mu.Lock()
	s.nextID++
	h := Hook{ID: s.nextID, Name: in.Name, URL: in.URL, Events: in.Events, Active: in.Active, Secret: in.Configuration.Secret}
	repo.hooks = append(repo.hooks, h)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, h)
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, repo *Repo, idText string) {
	id, _ := strconv.ParseInt(idText, 10, 64)
	deleteItem(s, w, &repo.hooks, func(h Hook) bool { return h.ID == id }, "webhook not found")
}

// deleteItem removes the first of *items that match accepts and answers
// 204, or answers 404 with missing when none does.
func deleteItem[T any](s *Server, w http.ResponseWriter, items *[]T, match func(T) bool, missing string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.IndexFunc(*items, match); i >= 0 {
		*items = slices.Delete(*items, i, i+1)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	restError(w, http.StatusNotFound, missing)
}

func (s *Server) createPullRequest(w http.ResponseWriter, r *http.Request, repo *Repo, _ string) {
	var in struct {
		Title          string
		FromRef, ToRef struct{ ID string }
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		restError(w, http.StatusBadRequest, "invalid pull request")
		return
	}
	s.mu.Lock()
	s.nextID++
	pr := PullRequest{ID: s.nextID, Title: in.Title, FromRef: in.FromRef.ID, ToRef: in.ToRef.ID}
	repo.prs = append(repo.prs, pr)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"id": pr.ID, "links": map[string]any{"self": []map[string]string{{"href": s.URL + "/projects/" + repo.Project + "/repos/" + repo.Slug + "/pull-requests/" + strconv.FormatInt(pr.ID, 10)}}}})
}

func (s *Server) putFile(w http.ResponseWriter, r *http.Request, repo *Repo, path string) {
	if err := r.ParseMultipartForm(1 << 20); err != nil {
		restError(w, http.StatusBadRequest, "expected multipart form")
		return
	}
	branch := r.FormValue("branch")
	if cur := repo.Head(branch); r.FormValue("sourceCommitId") != "" && cur != r.FormValue("sourceCommitId") {
		restError(w, http.StatusConflict, "the file has been modified since sourceCommitId")
		return
	}
	content := r.FormValue("content")
	sha, err := repo.CommitChanges(branch, map[string]*string{path: &content}, r.FormValue("message"), author("kontinuous"))
	if err != nil {
		restError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": sha, "displayId": sha[:11]})
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request, repo *Repo, sub string, need func(string) bool) {
	if !need(RepoAdmin) {
		return
	}
	switch {
	case sub == "ssh" && r.Method == http.MethodPost:
		var in struct {
			Key        struct{ Text string }
			Permission string
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil || in.Key.Text == "" {
			restError(w, http.StatusBadRequest, "invalid key")
			return
		}
		s.mu.Lock()
		s.nextID++
		k := AccessKey{ID: s.nextID, Text: in.Key.Text, Permission: in.Permission}
		repo.keys = append(repo.keys, k)
		s.mu.Unlock()
		writeJSON(w, http.StatusCreated, map[string]any{"key": map[string]any{"id": k.ID, "text": k.Text}, "permission": k.Permission})
	case strings.HasPrefix(sub, "ssh/") && r.Method == http.MethodDelete:
		id, _ := strconv.ParseInt(strings.TrimPrefix(sub, "ssh/"), 10, 64)
		deleteItem(s, w, &repo.keys, func(k AccessKey) bool { return k.ID == id }, "key not found")
	default:
		restError(w, http.StatusNotFound, "not found")
	}
}

func userJSON(u *user) map[string]any {
	return map[string]any{"name": u.name, "slug": u.name, "id": u.id, "displayName": u.name, "active": true, "type": "NORMAL"}
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	f := strings.ToLower(r.URL.Query().Get("filter"))
	s.mu.Lock()
	var out []map[string]any
	names := make([]string, 0, len(s.users))
	for n := range s.users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.Contains(strings.ToLower(n), f) {
			out = append(out, userJSON(s.users[n]))
		}
	}
	s.mu.Unlock()
	page(w, r, out)
}

func (s *Server) listRepos(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	min := permRank[RepoRead]
	if p := q.Get("permission"); p != "" {
		if permRank[p] == 0 {
			restError(w, http.StatusBadRequest, "invalid permission")
			return
		}
		min = permRank[p]
	}
	s.mu.Lock()
	var rs []*Repo
	for _, repo := range s.repos {
		if repo.permOf(name) < min {
			continue
		}
		if k := q.Get("projectkey"); k != "" && !strings.EqualFold(k, repo.Project) {
			continue
		}
		if n := q.Get("name"); n != "" && !strings.EqualFold(n, repo.Slug) {
			continue
		}
		rs = append(rs, repo)
	}
	s.mu.Unlock()
	sort.Slice(rs, func(i, j int) bool { return repoKey(rs[i].Project, rs[i].Slug) < repoKey(rs[j].Project, rs[j].Slug) })
	out := make([]map[string]any, 0, len(rs))
	for _, repo := range rs {
		out = append(out, repo.repoJSON())
	}
	page(w, r, out)
}

func (s *Server) listBranches(w http.ResponseWriter, r *http.Request, repo *Repo) {
	outb, err := repo.Git(nil, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/")
	if err != nil {
		restError(w, http.StatusInternalServerError, err.Error())
		return
	}
	f := r.URL.Query().Get("filterText")
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(outb)), "\n") {
		name, sha, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(name, f) {
			continue
		}
		out = append(out, map[string]any{"id": "refs/heads/" + name, "displayId": name, "type": "BRANCH",
			"latestCommit": sha, "isDefault": name == repo.DefaultBranch})
	}
	page(w, r, out)
}
