package fakegithub

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

type callerKey struct{}

func callerOf(r *http.Request) *user {
	u, _ := r.Context().Value(callerKey{}).(*user)
	return u
}

// serveAPI answers /api/v3/... as GitHub's REST API.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, caller *user, badToken bool) {
	h := w.Header()
	for k, v := range rateLimitHeader(s.clock(), 4999) {
		h[k] = v
	}
	h.Set("X-GitHub-Media-Type", "github.v3; format=json")
	h.Set("X-GitHub-Request-Id", strings.ToUpper(randomHex(8)))
	if badToken {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
		return
	}
	if caller != nil {
		h.Set("X-OAuth-Scopes", "admin:repo_hook, repo, user")
	}
	s.apiMux().ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
}

func (s *Server) apiMux() *http.ServeMux {
	s.muxOnce.Do(func() {
		m := http.NewServeMux()
		const p = "/api/v3"
		const repo = p + "/repos/{owner}/{repo}"
		m.HandleFunc("GET "+p+"/user", s.getUser)
		m.HandleFunc("GET "+p+"/user/repos", s.listUserRepos)
		m.HandleFunc("GET "+repo, s.getRepo)
		m.HandleFunc("GET "+repo+"/collaborators/{login}/permission", s.getCollaboratorPermission)
		m.HandleFunc("GET "+repo+"/branches/{branch...}", s.getBranch)
		m.HandleFunc("GET "+repo+"/git/ref/{ref...}", s.getRef)
		m.HandleFunc("GET "+repo+"/git/refs/{ref...}", s.getRefs)
		m.HandleFunc("POST "+repo+"/git/refs", s.createRef)
		m.HandleFunc("GET "+repo+"/contents/{path...}", s.getContents)
		m.HandleFunc("PUT "+repo+"/contents/{path...}", s.putContents)
		m.HandleFunc("GET "+repo+"/pulls", s.listPulls)
		m.HandleFunc("POST "+repo+"/pulls", s.createPull)
		m.HandleFunc("GET "+repo+"/hooks", hookItems.list(s))
		m.HandleFunc("POST "+repo+"/hooks", s.createHook)
		m.HandleFunc("GET "+repo+"/hooks/{id}", hookItems.get(s))
		m.HandleFunc("DELETE "+repo+"/hooks/{id}", hookItems.delete(s))
		m.HandleFunc("GET "+repo+"/keys", keyItems.list(s))
		m.HandleFunc("POST "+repo+"/keys", s.createKey)
		m.HandleFunc("GET "+repo+"/keys/{id}", keyItems.get(s))
		m.HandleFunc("DELETE "+repo+"/keys/{id}", keyItems.delete(s))
		m.HandleFunc("POST "+repo+"/statuses/{sha}", s.createStatus)
		m.HandleFunc("GET "+repo+"/commits/{ref}/statuses", s.listStatuses)
		m.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { notFound(w) })
		s.mux = m
	})
	return s.mux
}

func notFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
}

func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

func validationFailed(w http.ResponseWriter, resource, field, code, msg string) {
	e := map[string]string{"resource": resource, "field": field, "code": code}
	if msg != "" {
		e["message"] = msg
	}
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message": "Validation Failed", "errors": []any{e},
		"documentation_url": "https://docs.github.com/rest",
	})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 50<<20))
	if err := dec.Decode(v); err != nil {
		apiError(w, http.StatusBadRequest, "Problems parsing JSON")
		return false
	}
	return true
}

func requireAuth(w http.ResponseWriter, r *http.Request) (*user, bool) {
	u := callerOf(r)
	if u == nil {
		apiError(w, http.StatusUnauthorized, "Requires authentication")
		return nil, false
	}
	return u, true
}

// accessBody is access, then the request's JSON body decoded into v
// (400 when it does not decode).
func (s *Server) accessBody(w http.ResponseWriter, r *http.Request, need int, v any) (*Repo, *user, bool) {
	repo, c, ok := s.access(w, r, need)
	if !ok || !decodeBody(w, r, v) {
		return nil, nil, false
	}
	return repo, c, true
}

// access finds the request's repository and checks the caller has need:
// no read access answers 404, less than need 403.
func (s *Server) access(w http.ResponseWriter, r *http.Request, need int) (*Repo, *user, bool) {
	c := callerOf(r)
	s.mu.Lock()
	repo := s.repos[repoKey(r.PathValue("owner"), r.PathValue("repo"))]
	perm := permNone
	if repo != nil {
		perm = repo.permOf(c)
	}
	s.mu.Unlock()
	if repo == nil || perm < permRead {
		notFound(w)
		return nil, nil, false
	}
	if perm < need {
		if need == permAdmin {
			apiError(w, http.StatusForbidden, "Must have admin rights to Repository.")
		} else {
			apiError(w, http.StatusForbidden, fmt.Sprintf("Permission to %s/%s denied to %s.", repo.Owner, repo.Name, c.login))
		}
		return nil, nil, false
	}
	return repo, c, true
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// accountJSON describes login as GitHub's simple user; s.mu must be held.
func (s *Server) accountJSON(login string) map[string]any {
	id, typ := s.accountID(login)
	return map[string]any{
		"login":      login,
		"id":         id,
		"node_id":    fmt.Sprintf("U_%d", id),
		"avatar_url": fmt.Sprintf("%s/avatars/u/%d?v=4", s.URL, id),
		"url":        s.APIURL + "users/" + login,
		"html_url":   s.URL + "/" + login,
		"type":       typ,
		"site_admin": false,
	}
}

// accountID is the id of a user, or a stable made-up id for an
// organisation; s.mu must be held.
func (s *Server) accountID(login string) (int64, string) {
	if u := s.users[strings.ToLower(login)]; u != nil {
		return u.id, "User"
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(strings.ToLower(login))) // hash writes never fail
	return 9000000 + int64(h.Sum32()%1000000), "Organization"
}

// repoJSON describes repo as GitHub's full repository, with the
// permissions of perm (< 0: none given); s.mu must be held.
func (s *Server) repoJSON(repo *Repo, perm int) map[string]any {
	full := repo.Owner + "/" + repo.Name
	m := map[string]any{
		"id":             repo.ID,
		"node_id":        fmt.Sprintf("R_%d", repo.ID),
		"name":           repo.Name,
		"full_name":      full,
		"private":        !repo.public,
		"visibility":     visibility(repo.public),
		"fork":           false,
		"owner":          s.accountJSON(repo.Owner),
		"html_url":       s.URL + "/" + full,
		"url":            s.APIURL + "repos/" + full,
		"clone_url":      repo.CloneURL,
		"git_url":        "git://" + strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://") + "/" + full + ".git",
		"ssh_url":        "git@" + strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://") + ":" + full + ".git",
		"hooks_url":      s.APIURL + "repos/" + full + "/hooks",
		"default_branch": repo.DefaultBranch,
		"created_at":     ts(repo.created),
		"updated_at":     ts(repo.created),
		"pushed_at":      ts(repo.created),
		"archived":       false,
		"disabled":       false,
	}
	if perm >= 0 {
		m["permissions"] = map[string]bool{
			"admin": perm >= permAdmin, "maintain": perm >= permAdmin, "push": perm >= permPush,
			"triage": perm >= permRead, "pull": perm >= permRead,
		}
	}
	return m
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	u, ok := requireAuth(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	m := s.accountJSON(u.login)
	s.mu.Unlock()
	m["name"] = u.login
	m["email"] = nil
	writeJSON(w, http.StatusOK, m)
}

// paginate applies page/per_page to n items, sets the Link header and
// returns the slice bounds.
func paginate(w http.ResponseWriter, r *http.Request, n int) (int, int) {
	q := r.URL.Query()
	per, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || per <= 0 {
		per = 30
	}
	per = min(per, 100)
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page <= 0 {
		page = 1
	}
	last := max(1, (n+per-1)/per)
	link := func(p int, rel string) string {
		q2 := r.URL.Query()
		q2.Set("page", strconv.Itoa(p))
		q2.Set("per_page", strconv.Itoa(per))
		return fmt.Sprintf(`<http://%s%s?%s>; rel="%s"`, r.Host, r.URL.Path, q2.Encode(), rel)
	}
	var links []string
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"), link(min(page-1, last), "prev"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	start := min((page-1)*per, n)
	return start, min(start+per, n)
}

func (s *Server) listUserRepos(w http.ResponseWriter, r *http.Request) {
	u, ok := requireAuth(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	var list []map[string]any
	for _, k := range sortedKeys(s.repos) {
		repo := s.repos[k]
		if p := repo.permOf(u); p >= permRead {
			list = append(list, s.repoJSON(repo, p))
		}
	}
	s.mu.Unlock()
	start, end := paginate(w, r, len(list))
	writeJSON(w, http.StatusOK, append([]map[string]any{}, list[start:end]...))
}

func (s *Server) getRepo(w http.ResponseWriter, r *http.Request) {
	repo, c, ok := s.access(w, r, permRead)
	if !ok {
		return
	}
	s.mu.Lock()
	m := s.repoJSON(repo, repo.permOf(c))
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) getCollaboratorPermission(w http.ResponseWriter, r *http.Request) {
	repo, _, ok := s.access(w, r, permRead)
	if !ok {
		return
	}
	login := r.PathValue("login")
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[strings.ToLower(login)]
	if u == nil {
		apiError(w, http.StatusNotFound, login+" is not a user")
		return
	}
	perm := repo.permOf(u)
	name := [...]string{"none", "read", "write", "admin"}[perm]
	acct := s.accountJSON(u.login)
	writeJSON(w, http.StatusOK, map[string]any{"permission": name, "role_name": name, "user": acct})
}

func (s *Server) refJSON(repo *Repo, ref, sha string) map[string]any {
	base := s.APIURL + "repos/" + repo.Owner + "/" + repo.Name
	return map[string]any{
		"ref":     ref,
		"node_id": "REF_" + sha[:12],
		"url":     base + "/git/" + ref,
		"object":  map[string]any{"type": "commit", "sha": sha, "url": base + "/git/commits/" + sha},
	}
}

func (s *Server) getBranch(w http.ResponseWriter, r *http.Request) {
	repo, _, ok := s.access(w, r, permRead)
	if !ok {
		return
	}
	b := r.PathValue("branch")
	sha := ""
	if gitrepo.ValidBranch(b) {
		sha = repo.Head(b)
	}
	if sha == "" {
		apiError(w, http.StatusNotFound, "Branch not found")
		return
	}
	base := s.APIURL + "repos/" + repo.Owner + "/" + repo.Name
	writeJSON(w, http.StatusOK, map[string]any{
		"name": b,
		"commit": map[string]any{
			"sha": sha, "url": base + "/commits/" + sha,
			"commit": map[string]any{"url": base + "/git/commits/" + sha},
		},
		"protected": false,
		"_links":    map[string]string{"self": base + "/branches/" + b, "html": s.URL + "/" + repo.Owner + "/" + repo.Name + "/tree/" + b},
	})
}

// refs lists the repository's refs under refs/heads and refs/tags.
func (repo *Repo) refs() (map[string]string, error) {
	out, err := repo.Git(nil, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags")
	if err != nil {
		return nil, err
	}
	refs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if name, sha, ok := strings.Cut(line, " "); ok {
			refs[name] = sha
		}
	}
	return refs, nil
}

// accessRefs is access for reading, then the repository's refs (500 when
// git cannot list them).
func (s *Server) accessRefs(w http.ResponseWriter, r *http.Request) (*Repo, map[string]string, bool) {
	repo, _, ok := s.access(w, r, permRead)
	if !ok {
		return nil, nil, false
	}
	refs, err := repo.refs()
	if err != nil {
		apiError(w, http.StatusInternalServerError, "fakegithub: "+err.Error())
		return nil, nil, false
	}
	return repo, refs, true
}

func (s *Server) getRef(w http.ResponseWriter, r *http.Request) {
	repo, refs, ok := s.accessRefs(w, r)
	if !ok {
		return
	}
	ref := "refs/" + r.PathValue("ref")
	sha, found := refs[ref]
	if !found {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, s.refJSON(repo, ref, sha))
}

// getRefs answers the legacy plural form: an exact match as an object,
// else every ref with that prefix as a list.
func (s *Server) getRefs(w http.ResponseWriter, r *http.Request) {
	repo, refs, ok := s.accessRefs(w, r)
	if !ok {
		return
	}
	ref := "refs/" + r.PathValue("ref")
	if sha, found := refs[ref]; found {
		writeJSON(w, http.StatusOK, s.refJSON(repo, ref, sha))
		return
	}
	var list []map[string]any
	for _, name := range sortedKeys(refs) {
		if strings.HasPrefix(name, ref) {
			list = append(list, s.refJSON(repo, name, refs[name]))
		}
	}
	if len(list) == 0 {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) createRef(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Ref string `json:"ref"`
		SHA string `json:"sha"`
	}
	repo, _, ok := s.accessBody(w, r, permPush, &body)
	if !ok {
		return
	}
	name, isBranch := strings.CutPrefix(body.Ref, "refs/heads/")
	if !isBranch {
		name, isBranch = strings.CutPrefix(body.Ref, "refs/tags/")
	}
	if !isBranch || !gitrepo.ValidBranch(name) {
		apiError(w, http.StatusUnprocessableEntity, "Reference name must start with 'refs/' and have at least two slashes.")
		return
	}
	if !gitrepo.IsSHA(body.SHA) {
		apiError(w, http.StatusUnprocessableEntity, "Object does not exist")
		return
	}
	if sha, err := repo.Resolve(body.SHA); err != nil || sha != body.SHA {
		apiError(w, http.StatusUnprocessableEntity, "Object does not exist")
		return
	}
	if err := repo.CreateRef(body.Ref, body.SHA); err != nil {
		apiError(w, http.StatusUnprocessableEntity, "Reference already exists")
		return
	}
	writeJSON(w, http.StatusCreated, s.refJSON(repo, body.Ref, body.SHA))
}

func blobSHA(content []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(content))
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil))
}

// wrap64 encodes b as GitHub does: base64 with a newline every 60 characters.
func wrap64(b []byte) string {
	enc := base64.StdEncoding.EncodeToString(b)
	var sb strings.Builder
	for len(enc) > 60 {
		sb.WriteString(enc[:60])
		sb.WriteByte('\n')
		enc = enc[60:]
	}
	sb.WriteString(enc)
	sb.WriteByte('\n')
	return sb.String()
}

func (s *Server) contentJSON(repo *Repo, e gitrepo.TreeEntry, ref string) map[string]any {
	full := repo.Owner + "/" + repo.Name
	typ := "file"
	if e.Type == "tree" {
		typ = "dir"
	}
	self := s.APIURL + "repos/" + full + "/contents/" + e.Path + "?ref=" + url.QueryEscape(ref)
	m := map[string]any{
		"type":     typ,
		"name":     path.Base(e.Path),
		"path":     e.Path,
		"sha":      e.SHA,
		"size":     e.Size,
		"url":      self,
		"html_url": s.URL + "/" + full + "/blob/" + ref + "/" + e.Path,
		"git_url":  s.APIURL + "repos/" + full + "/git/blobs/" + e.SHA,
		"_links":   map[string]string{"self": self},
	}
	if typ == "file" {
		m["download_url"] = s.URL + "/raw/" + full + "/" + ref + "/" + e.Path
	}
	return m
}

func (s *Server) getContents(w http.ResponseWriter, r *http.Request) {
	repo, _, ok := s.access(w, r, permRead)
	if !ok {
		return
	}
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		ref = repo.DefaultBranch
	}
	commit, err := repo.Resolve(ref)
	if err != nil {
		apiError(w, http.StatusNotFound, "No commit found for the ref "+ref)
		return
	}
	p := strings.Trim(r.PathValue("path"), "/")
	if p != "" && !gitrepo.ValidPath(p) {
		notFound(w)
		return
	}
	var e gitrepo.TreeEntry
	if p == "" {
		e = gitrepo.TreeEntry{Type: "tree"}
	} else if e, err = repo.LsEntry(commit, p); err != nil {
		notFound(w)
		return
	}
	if e.Type == "tree" {
		entries, err := repo.LsTree(commit, p)
		if err != nil {
			apiError(w, http.StatusInternalServerError, "fakegithub: "+err.Error())
			return
		}
		list := []map[string]any{}
		for _, c := range entries {
			list = append(list, s.contentJSON(repo, c, ref))
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	if e.Type != "blob" {
		notFound(w)
		return
	}
	data, err := repo.CatBlob(e.SHA)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "fakegithub: "+err.Error())
		return
	}
	m := s.contentJSON(repo, e, ref)
	if len(data) > 1<<20 {
		// GitHub does not inline files over 1 MB.
		m["encoding"] = "none"
		m["content"] = ""
	} else {
		m["encoding"] = "base64"
		m["content"] = wrap64(data)
	}
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) putContents(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Message *string `json:"message"`
		Content *string `json:"content"`
		SHA     string  `json:"sha"`
		Branch  string  `json:"branch"`
	}
	repo, c, ok := s.accessBody(w, r, permPush, &body)
	if !ok {
		return
	}
	p := r.PathValue("path")
	switch {
	case body.Message == nil:
		apiError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"message\" wasn't supplied.")
		return
	case body.Content == nil:
		apiError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"content\" wasn't supplied.")
		return
	case !gitrepo.ValidPath(p):
		validationFailed(w, "Commit", "path", "invalid", "")
		return
	}
	content, err := base64.StdEncoding.DecodeString(*body.Content)
	if err != nil {
		apiError(w, http.StatusUnprocessableEntity, "content is not valid Base64")
		return
	}
	branch := body.Branch
	if branch == "" {
		branch = repo.DefaultBranch
	}

	repo.Lock()
	defer repo.Unlock()
	parent := ""
	if gitrepo.ValidBranch(branch) {
		parent = repo.Head(branch)
	}
	if parent == "" {
		apiError(w, http.StatusNotFound, "Branch "+branch+" not found")
		return
	}
	existing, err := repo.LsEntry(parent, p)
	exists := err == nil
	switch {
	case exists && existing.Type != "blob":
		apiError(w, http.StatusUnprocessableEntity, "path is a directory")
		return
	case exists && body.SHA == "":
		apiError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"sha\" wasn't supplied.")
		return
	case exists && body.SHA != existing.SHA, !exists && body.SHA != "":
		apiError(w, http.StatusConflict, fmt.Sprintf("%s does not match %s", p, body.SHA))
		return
	}
	str := string(content)
	sha, err := repo.CommitChangesLocked(branch, "", map[string]*string{p: &str}, *body.Message, author(c.login))
	if err != nil {
		apiError(w, http.StatusInternalServerError, "fakegithub: "+err.Error())
		return
	}
	tree, err := repo.Git(nil, "rev-parse", sha+"^{tree}")
	if err != nil {
		apiError(w, http.StatusInternalServerError, "fakegithub: "+err.Error())
		return
	}
	full := repo.Owner + "/" + repo.Name
	blob := blobSHA(content)
	now := ts(s.clock())
	status := http.StatusCreated
	if exists {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{
		"content": s.contentJSON(repo, gitrepo.TreeEntry{Type: "blob", SHA: blob, Path: p, Size: int64(len(content))}, branch),
		"commit": map[string]any{
			"sha":       sha,
			"node_id":   "C_" + sha[:12],
			"url":       s.APIURL + "repos/" + full + "/git/commits/" + sha,
			"html_url":  s.URL + "/" + full + "/commit/" + sha,
			"message":   *body.Message,
			"author":    map[string]string{"name": c.login, "email": strings.ToLower(c.login) + "@users.noreply.github.com", "date": now},
			"committer": map[string]string{"name": "GitHub", "email": "noreply@github.com", "date": now},
			"tree":      map[string]string{"sha": strings.TrimSpace(string(tree))},
			"parents":   []map[string]string{{"sha": parent}},
		},
	})
}

func (s *Server) pullJSON(repo *Repo, pr PullRequest, baseSHA string) map[string]any {
	full := repo.Owner + "/" + repo.Name
	rj := s.repoJSON(repo, -1)
	return map[string]any{
		"id":       repo.ID*1000 + int64(pr.Number),
		"node_id":  fmt.Sprintf("PR_%d_%d", repo.ID, pr.Number),
		"number":   pr.Number,
		"state":    pr.State,
		"title":    pr.Title,
		"body":     pr.Body,
		"draft":    false,
		"merged":   false,
		"html_url": pr.HTMLURL,
		"url":      s.APIURL + "repos/" + full + "/pulls/" + strconv.Itoa(pr.Number),
		"user":     s.accountJSON(pr.User),
		"head":     map[string]any{"label": repo.Owner + ":" + pr.Head, "ref": pr.Head, "sha": pr.HeadSHA, "repo": rj, "user": s.accountJSON(repo.Owner)},
		"base":     map[string]any{"label": repo.Owner + ":" + pr.Base, "ref": pr.Base, "sha": baseSHA, "repo": rj, "user": s.accountJSON(repo.Owner)},
	}
}

func (s *Server) listPulls(w http.ResponseWriter, r *http.Request) {
	repo, _, ok := s.access(w, r, permRead)
	if !ok {
		return
	}
	s.mu.Lock()
	pulls := append([]PullRequest(nil), repo.pulls...)
	s.mu.Unlock()
	list := []map[string]any{}
	for i := len(pulls) - 1; i >= 0; i-- {
		base := repo.Head(pulls[i].Base)
		s.mu.Lock()
		list = append(list, s.pullJSON(repo, pulls[i], base))
		s.mu.Unlock()
	}
	start, end := paginate(w, r, len(list))
	writeJSON(w, http.StatusOK, list[start:end])
}

func (s *Server) createPull(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Title string `json:"title"`
		Head  string `json:"head"`
		Base  string `json:"base"`
		Body  string `json:"body"`
	}
	repo, c, ok := s.accessBody(w, r, permRead, &body)
	if !ok {
		return
	}
	head := body.Head
	if owner, b, found := strings.Cut(head, ":"); found {
		if !strings.EqualFold(owner, repo.Owner) {
			validationFailed(w, "PullRequest", "head", "invalid", "")
			return
		}
		head = b
	}
	if body.Title == "" {
		validationFailed(w, "PullRequest", "title", "missing_field", "")
		return
	}
	headSHA, baseSHA := "", ""
	if gitrepo.ValidBranch(head) {
		headSHA = repo.Head(head)
	}
	if gitrepo.ValidBranch(body.Base) {
		baseSHA = repo.Head(body.Base)
	}
	if headSHA == "" {
		validationFailed(w, "PullRequest", "head", "invalid", "")
		return
	}
	if baseSHA == "" {
		validationFailed(w, "PullRequest", "base", "invalid", "")
		return
	}
	if headSHA == baseSHA {
		validationFailed(w, "PullRequest", "", "custom", fmt.Sprintf("No commits between %s and %s", body.Base, head))
		return
	}
	s.mu.Lock()
	for _, pr := range repo.pulls {
		if pr.State == "open" && pr.Head == head && pr.Base == body.Base {
			s.mu.Unlock()
			validationFailed(w, "PullRequest", "", "custom", fmt.Sprintf("A pull request already exists for %s:%s.", repo.Owner, head))
			return
		}
	}
	n := len(repo.pulls) + 1
	pr := PullRequest{Number: n, Title: body.Title, Body: body.Body, Head: head, Base: body.Base, HeadSHA: headSHA,
		HTMLURL: fmt.Sprintf("%s/%s/%s/pull/%d", s.URL, repo.Owner, repo.Name, n), State: "open", User: c.login}
	repo.pulls = append(repo.pulls, pr)
	m := s.pullJSON(repo, pr, baseSHA)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, m)
}

// repoItems is a list of a repository's (webhooks or deploy keys) that
// only admins see: each item has an id and is answered as render makes
// it.
type repoItems[T any] struct {
	of     func(*Repo) *[]T
	id     func(T) int64
	render func(*Server, *Repo, T) map[string]any
}

var (
	hookItems = repoItems[hookRec]{of: func(r *Repo) *[]hookRec { return &r.hooks }, id: func(h hookRec) int64 { return h.ID }, render: (*Server).hookJSON}
	keyItems  = repoItems[DeployKey]{of: func(r *Repo) *[]DeployKey { return &r.keys }, id: func(k DeployKey) int64 { return k.ID }, render: (*Server).keyJSON}
)

// list answers the items, paginated.
func (c repoItems[T]) list(s *Server) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repo, _, ok := s.access(w, r, permAdmin)
		if !ok {
			return
		}
		s.mu.Lock()
		list := []map[string]any{}
		for _, x := range *c.of(repo) {
			list = append(list, c.render(s, repo, x))
		}
		s.mu.Unlock()
		start, end := paginate(w, r, len(list))
		writeJSON(w, http.StatusOK, list[start:end])
	}
}

// index is the position of the item whose id is the path's {id}, or -1
// (a bad id matches nothing). s.mu must be held.
func (c repoItems[T]) index(repo *Repo, r *http.Request) int {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	return slices.IndexFunc(*c.of(repo), func(x T) bool { return c.id(x) == id })
}

// get answers the item {id}.
func (c repoItems[T]) get(s *Server) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repo, _, ok := s.access(w, r, permAdmin)
		if !ok {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if i := c.index(repo, r); i >= 0 {
			writeJSON(w, http.StatusOK, c.render(s, repo, (*c.of(repo))[i]))
			return
		}
		notFound(w)
	}
}

// delete removes the item {id}.
func (c repoItems[T]) delete(s *Server) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repo, _, ok := s.access(w, r, permAdmin)
		if !ok {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if i := c.index(repo, r); i >= 0 {
			items := c.of(repo)
			*items = append((*items)[:i:i], (*items)[i+1:]...)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		notFound(w)
	}
}

func (s *Server) hookJSON(repo *Repo, h hookRec) map[string]any {
	base := fmt.Sprintf("%srepos/%s/%s/hooks/%d", s.APIURL, repo.Owner, repo.Name, h.ID)
	cfg := map[string]string{"url": h.URL, "content_type": h.ContentType, "insecure_ssl": h.insecureSSL}
	if h.Secret != "" {
		cfg["secret"] = "********"
	}
	now := ts(repo.created)
	return map[string]any{
		"type": "Repository", "id": h.ID, "name": "web", "active": h.Active, "events": h.Events,
		"config": cfg, "created_at": now, "updated_at": now, "url": base,
		"test_url": base + "/test", "ping_url": base + "/pings", "deliveries_url": base + "/deliveries",
		"last_response": map[string]any{"code": nil, "status": "unused", "message": nil},
	}
}

func (s *Server) createHook(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name   string `json:"name"`
		Config struct {
			URL         string `json:"url"`
			ContentType string `json:"content_type"`
			Secret      string `json:"secret"`
			InsecureSSL any    `json:"insecure_ssl"`
		} `json:"config"`
		Events []string `json:"events"`
		Active *bool    `json:"active"`
	}
	repo, _, ok := s.accessBody(w, r, permAdmin, &body)
	if !ok {
		return
	}
	if body.Name != "" && body.Name != "web" {
		validationFailed(w, "Hook", "name", "invalid", "")
		return
	}
	u, err := url.Parse(body.Config.URL)
	if body.Config.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		validationFailed(w, "Hook", "config", "custom", "url is missing or invalid")
		return
	}
	h := hookRec{Hook: Hook{URL: body.Config.URL, ContentType: body.Config.ContentType, Secret: body.Config.Secret,
		Events: body.Events, Active: body.Active == nil || *body.Active}, insecureSSL: "0"}
	switch v := body.Config.InsecureSSL.(type) {
	case string:
		h.insecureSSL = v
	case float64:
		h.insecureSSL = strconv.FormatFloat(v, 'f', -1, 64)
	}
	if h.ContentType == "" {
		h.ContentType = "form"
	}
	if h.ContentType != "form" && h.ContentType != "json" {
		validationFailed(w, "Hook", "content_type", "invalid", "")
		return
	}
	if len(h.Events) == 0 {
		h.Events = []string{"push"}
	}
	s.mu.Lock()
	for _, old := range repo.hooks {
		if old.URL == h.URL {
			s.mu.Unlock()
			validationFailed(w, "Hook", "", "custom", "Hook already exists on this repository")
			return
		}
	}
	s.nextID++
	h.ID = s.nextID
	repo.hooks = append(repo.hooks, h)
	m := s.hookJSON(repo, h)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, m)
}

func (s *Server) keyJSON(repo *Repo, k DeployKey) map[string]any {
	return map[string]any{
		"id": k.ID, "key": k.Key, "title": k.Title, "read_only": k.ReadOnly, "verified": true,
		"url":        fmt.Sprintf("%srepos/%s/%s/keys/%d", s.APIURL, repo.Owner, repo.Name, k.ID),
		"created_at": ts(repo.created),
	}
}

var keyTypes = map[string]bool{
	"ssh-rsa": true, "ssh-ed25519": true, "ecdsa-sha2-nistp256": true, "ecdsa-sha2-nistp384": true,
	"ecdsa-sha2-nistp521": true, "sk-ssh-ed25519@openssh.com": true, "sk-ecdsa-sha2-nistp256@openssh.com": true,
}

// keyBlob returns the "type base64" part of an OpenSSH public key, or "".
func keyBlob(key string) string {
	f := strings.Fields(key)
	if len(f) < 2 || !keyTypes[f[0]] {
		return ""
	}
	if _, err := base64.StdEncoding.DecodeString(f[1]); err != nil {
		return ""
	}
	return f[0] + " " + f[1]
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Title    string `json:"title"`
		Key      string `json:"key"`
		ReadOnly bool   `json:"read_only"`
	}
	repo, _, ok := s.accessBody(w, r, permAdmin, &body)
	if !ok {
		return
	}
	blob := keyBlob(body.Key)
	if blob == "" {
		validationFailed(w, "PublicKey", "key", "custom", "key is invalid. You must supply a key in OpenSSH public key format")
		return
	}
	s.mu.Lock()
	for _, k := range repo.keys {
		if keyBlob(k.Key) == blob {
			s.mu.Unlock()
			validationFailed(w, "PublicKey", "key", "custom", "key is already in use")
			return
		}
	}
	s.nextID++
	k := DeployKey{ID: s.nextID, Title: body.Title, Key: strings.TrimSpace(body.Key), ReadOnly: body.ReadOnly}
	repo.keys = append(repo.keys, k)
	m := s.keyJSON(repo, k)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, m)
}

func (s *Server) statusJSON(repo *Repo, id int64, st statusRec) map[string]any {
	m := map[string]any{
		"id": id, "node_id": fmt.Sprintf("SC_%d", id), "state": st.State, "context": st.Context,
		"description": st.Description, "target_url": st.TargetURL,
		"url":        fmt.Sprintf("%srepos/%s/%s/statuses/%d", s.APIURL, repo.Owner, repo.Name, id),
		"created_at": ts(s.now()), "updated_at": ts(s.now()), "creator": s.accountJSON(st.creator),
	}
	for _, k := range []string{"description", "target_url"} {
		if m[k] == "" {
			m[k] = nil
		}
	}
	return m
}

func (s *Server) createStatus(w http.ResponseWriter, r *http.Request) {
	var body struct {
		State       string `json:"state"`
		TargetURL   string `json:"target_url"`
		Description string `json:"description"`
		Context     string `json:"context"`
	}
	repo, c, ok := s.accessBody(w, r, permPush, &body)
	if !ok {
		return
	}
	switch body.State {
	case "pending", "success", "failure", "error":
	default:
		validationFailed(w, "Status", "state", "custom", "state is not included in the list")
		return
	}
	if len([]rune(body.Description)) > 140 {
		validationFailed(w, "Status", "description", "custom", "description is too long (maximum is 140 characters)")
		return
	}
	sha, err := repo.Resolve(r.PathValue("sha"))
	if err != nil {
		validationFailed(w, "Status", "sha", "custom", "No commit found for SHA: "+r.PathValue("sha"))
		return
	}
	if body.Context == "" {
		body.Context = "default"
	}
	st := statusRec{Status{State: body.State, Context: body.Context, Description: body.Description, TargetURL: body.TargetURL}, c.login}
	s.mu.Lock()
	s.nextID++
	repo.statuses[sha] = append(repo.statuses[sha], st)
	m := s.statusJSON(repo, s.nextID, st)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, m)
}

func (s *Server) listStatuses(w http.ResponseWriter, r *http.Request) {
	repo, _, ok := s.access(w, r, permRead)
	if !ok {
		return
	}
	sha, err := repo.Resolve(r.PathValue("ref"))
	if err != nil {
		notFound(w)
		return
	}
	s.mu.Lock()
	sts := repo.statuses[sha]
	list := []map[string]any{}
	for i := len(sts) - 1; i >= 0; i-- {
		list = append(list, s.statusJSON(repo, int64(i+1), sts[i]))
	}
	s.mu.Unlock()
	start, end := paginate(w, r, len(list))
	writeJSON(w, http.StatusOK, list[start:end])
}
