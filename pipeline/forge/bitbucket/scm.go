package bitbucket

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
)

// The REST 2.0 shapes we read.
type (
	bbUser struct {
		UUID        string `json:"uuid"`
		Username    string `json:"username"`
		DisplayName string `json:"display_name"`
		AccountID   string `json:"account_id"`
	}
	bbLink struct {
		Href string `json:"href"`
		Name string `json:"name"`
	}
	bbRepo struct {
		UUID       string `json:"uuid"`
		FullName   string `json:"full_name"`
		Slug       string `json:"slug"`
		IsPrivate  bool   `json:"is_private"`
		Mainbranch *struct {
			Name string `json:"name"`
		} `json:"mainbranch"`
		Workspace struct {
			Slug string `json:"slug"`
		} `json:"workspace"`
		Links struct {
			Avatar bbLink   `json:"avatar"`
			Clone  []bbLink `json:"clone"`
		} `json:"links"`
	}
	bbWorkspaceAccess struct {
		Workspace struct {
			Slug string `json:"slug"`
		} `json:"workspace"`
	}
	bbPermission struct {
		Permission string `json:"permission"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	bbHook struct {
		UUID string `json:"uuid"`
	}
)

// User implements pipeline.SCM: GET /user. UID is the {uuid}, braces kept.
func (f *Forge) User(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeUser, error) {
	var u bbUser
	if _, err := f.client(tok).do(ctx, http.MethodGet, "/user", nil, &u); err != nil {
		return pipeline.ForgeUser{}, err
	}
	if u.UUID == "" || u.Username == "" {
		return pipeline.ForgeUser{}, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket returned no user uuid or username")
	}
	return pipeline.ForgeUser{ID: ID64(u.UUID), UID: u.UUID, Login: u.Username}, nil
}

func (r bbRepo) toRepository() pipeline.Repository {
	ws, slug, _ := strings.Cut(r.FullName, "/")
	if r.Workspace.Slug != "" {
		ws = r.Workspace.Slug
	}
	if r.Slug != "" {
		slug = r.Slug
	}
	out := pipeline.Repository{
		ID: ID64(r.UUID), Owner: ws, Name: slug, FullName: ws + "/" + slug,
		AvatarURL: r.Links.Avatar.Href, Private: r.IsPrivate,
	}
	if r.Mainbranch != nil {
		out.DefaultBranch = r.Mainbranch.Name
	}
	for _, l := range r.Links.Clone {
		if l.Name == "https" {
			out.CloneURL = stripUser(l.Href)
		}
	}
	return out
}

// stripUser drops the "user@" Bitbucket puts in its https clone links.
func stripUser(href string) string {
	u, err := url.Parse(href)
	if err != nil {
		return href
	}
	u.User = nil
	return u.String()
}

// Repositories implements pipeline.SCM: every repository the user is a
// member of, over all their workspaces and all pages.
func (f *Forge) Repositories(ctx context.Context, tok pipeline.ForgeToken) ([]pipeline.Repository, error) {
	c := f.client(tok)
	wss, err := all[bbWorkspaceAccess](ctx, c, "/user/workspaces?pagelen=100")
	if err != nil {
		return nil, err
	}
	out := []pipeline.Repository{}
	for _, w := range wss {
		rs, err := all[bbRepo](ctx, c, "/repositories/"+url.PathEscape(w.Workspace.Slug)+"?role=member&pagelen=100")
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			out = append(out, r.toRepository())
		}
	}
	return out, nil
}

// Repository implements pipeline.SCM.
func (f *Forge) Repository(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Repository, error) {
	var r bbRepo
	if _, err := f.client(tok).do(ctx, http.MethodGet, repoPath(owner, name), nil, &r); err != nil {
		return pipeline.Repository{}, err
	}
	if r.UUID == "" {
		return pipeline.Repository{}, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket returned a repository without uuid")
	}
	return r.toRepository(), nil
}

// Permission implements pipeline.SCM: the user's permission on the
// repository (read / write / admin → read / push / admin), cached 30 s.
func (f *Forge) Permission(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, error) {
	if p, ok := f.perms.Get(tok, owner, name); ok {
		return p, nil
	}
	q := url.Values{"q": {fmt.Sprintf(`repository.full_name="%s/%s"`, owner, name)}}
	ps, err := all[bbPermission](ctx, f.client(tok), "/user/workspaces/"+url.PathEscape(owner)+"/permissions/repositories?"+q.Encode())
	if errors.Is(err, pipeline.ErrNotFound) {
		err = nil
	}
	if err != nil {
		return pipeline.PermNone, err
	}
	perm := pipeline.PermNone
	for _, p := range ps {
		if !strings.EqualFold(p.Repository.FullName, owner+"/"+name) {
			continue
		}
		switch p.Permission {
		case "admin":
			perm = max(perm, pipeline.PermAdmin)
		case "write":
			perm = max(perm, pipeline.PermPush)
		case "read":
			perm = max(perm, pipeline.PermRead)
		}
	}
	f.perms.Put(tok, owner, name, perm)
	return perm, nil
}

// BranchHead implements pipeline.SCM: /refs/branches/{name} → target.hash.
func (f *Forge) BranchHead(ctx context.Context, tok pipeline.ForgeToken, owner, name, branch string) (string, error) {
	var b struct {
		Target struct {
			Hash string `json:"hash"`
		} `json:"target"`
	}
	if _, err := f.client(tok).do(ctx, http.MethodGet, repoPath(owner, name)+"/refs/branches/"+url.PathEscape(branch), nil, &b); err != nil {
		return "", err
	}
	if !shaRE.MatchString(b.Target.Hash) {
		return "", pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket returned no commit for branch %q", branch)
	}
	return b.Target.Hash, nil
}

var (
	shaRE   = regexp.MustCompile(`^[0-9a-f]{40}$`)
	shortRE = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
)

// ExpandCommit returns the full SHA of a (possibly shortened) commit hash:
// GET /commit/{hash}. Bitbucket's pull request payloads carry 12 characters.
func (f *Forge) ExpandCommit(ctx context.Context, tok pipeline.ForgeToken, owner, name, hash string) (string, error) {
	if shaRE.MatchString(hash) {
		return hash, nil
	}
	if !shortRE.MatchString(hash) {
		return "", pipeline.Invalid("commit", "%q is not a commit hash", hash)
	}
	var c struct {
		Hash string `json:"hash"`
	}
	if _, err := f.client(tok).do(ctx, http.MethodGet, repoPath(owner, name)+"/commit/"+hash, nil, &c); err != nil {
		return "", err
	}
	if !shaRE.MatchString(c.Hash) || !strings.HasPrefix(c.Hash, hash) {
		return "", pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket expanded %s to an unexpected hash", hash)
	}
	return c.Hash, nil
}

// FileAt implements pipeline.SCM: /src/{commit}/{path}. A branch ref is
// resolved to its head first (a branch name may hold slashes); File.SHA
// is the git blob id of the content.
func (f *Forge) FileAt(ctx context.Context, tok pipeline.ForgeToken, owner, name, p, ref string) (pipeline.File, error) {
	commit, err := f.commitOf(ctx, tok, owner, name, ref)
	if err != nil {
		return pipeline.File{}, err
	}
	var data []byte
	if _, err := f.client(tok).do(ctx, http.MethodGet, repoPath(owner, name)+"/src/"+commit+"/"+escapePath(p), nil, &data); err != nil {
		return pipeline.File{}, err
	}
	return pipeline.File{Content: data, SHA: blobSHA(data)}, nil
}

// commitOf names ref as something /src takes: a SHA as is, "" the main
// branch's head, a branch its head, anything else (tag) as given.
func (f *Forge) commitOf(ctx context.Context, tok pipeline.ForgeToken, owner, name, ref string) (string, error) {
	if shaRE.MatchString(ref) {
		return ref, nil
	}
	if ref == "" {
		r, err := f.Repository(ctx, tok, owner, name)
		if err != nil {
			return "", err
		}
		ref = r.DefaultBranch
	}
	head, err := f.BranchHead(ctx, tok, owner, name, ref)
	if errors.Is(err, pipeline.ErrNotFound) {
		return url.PathEscape(ref), nil
	}
	return head, err
}

func escapePath(p string) string {
	parts := strings.Split(path.Clean("/" + p)[1:], "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// blobSHA is git's blob id of data.
func blobSHA(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// PutFile implements pipeline.SCM: POST /src (multipart: the field named
// after the path holds the content, plus message and branch). sha, when
// set, must be the blob now at path on branch (ErrConflict otherwise).
// It returns the new commit from the reply's Location.
func (f *Forge) PutFile(ctx context.Context, tok pipeline.ForgeToken, owner, name, p, branch, message string, content []byte, sha string) (string, error) {
	if sha != "" {
		cur, err := f.FileAt(ctx, tok, owner, name, p, branch)
		if err != nil && !errors.Is(err, pipeline.ErrNotFound) {
			return "", err
		}
		if cur.SHA != sha {
			return "", pipeline.Errorf(pipeline.ErrConflict, "%s changed on %s since it was read", p, branch)
		}
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("message", message)
	_ = mw.WriteField("branch", branch)
	fw, err := mw.CreateFormFile(p, path.Base(p))
	if err != nil {
		return "", err
	}
	_, _ = fw.Write(content)
	if err := mw.Close(); err != nil {
		return "", err
	}
	h, err := f.client(tok).do(ctx, http.MethodPost, repoPath(owner, name)+"/src", rawBody{data: buf.Bytes(), ctype: mw.FormDataContentType()}, nil)
	if err != nil {
		return "", err
	}
	if c := path.Base(h.Get("Location")); shaRE.MatchString(c) {
		return c, nil
	}
	return f.BranchHead(ctx, tok, owner, name, branch)
}

// CreateBranch implements pipeline.SCM: POST /refs/branches.
func (f *Forge) CreateBranch(ctx context.Context, tok pipeline.ForgeToken, owner, name, branch, sha string) error {
	body := map[string]any{"name": branch, "target": map[string]string{"hash": sha}}
	_, err := f.client(tok).do(ctx, http.MethodPost, repoPath(owner, name)+"/refs/branches", body, nil)
	return err
}

// CreatePullRequest implements pipeline.SCM: POST /pullrequests.
func (f *Forge) CreatePullRequest(ctx context.Context, tok pipeline.ForgeToken, owner, name, title, head, base string) (string, error) {
	body := map[string]any{
		"title":       title,
		"source":      map[string]any{"branch": map[string]string{"name": head}},
		"destination": map[string]any{"branch": map[string]string{"name": base}},
	}
	var pr struct {
		Links struct {
			HTML bbLink `json:"html"`
		} `json:"links"`
	}
	if _, err := f.client(tok).do(ctx, http.MethodPost, repoPath(owner, name)+"/pullrequests", body, &pr); err != nil {
		return "", err
	}
	return pr.Links.HTML.Href, nil
}

// HookEvents are the events a pipeline's webhook subscribes to.
var HookEvents = []string{"repo:push", "pullrequest:created", "pullrequest:updated"}

// CreateWebhook implements pipeline.SCM: POST /hooks with the secret
// (Bitbucket never returns it). The id is ID64 of the hook's uuid.
func (f *Forge) CreateWebhook(ctx context.Context, tok pipeline.ForgeToken, owner, name string, h pipeline.Hook) (int64, error) {
	if len(h.Secret) < 32 {
		return 0, pipeline.Invalid("secret", "a webhook needs a strong secret")
	}
	body := map[string]any{"description": "Kontinuous", "url": h.URL, "active": true, "events": HookEvents, "secret": h.Secret}
	var out bbHook
	if _, err := f.client(tok).do(ctx, http.MethodPost, repoPath(owner, name)+"/hooks", body, &out); err != nil {
		return 0, err
	}
	if out.UUID == "" {
		return 0, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket returned a webhook without uuid")
	}
	return ID64(out.UUID), nil
}

// DeleteWebhook implements pipeline.SCM: the hook whose uuid maps to id is
// found among the repository's hooks and deleted; a missing one (or
// repository) is not an error.
func (f *Forge) DeleteWebhook(ctx context.Context, tok pipeline.ForgeToken, owner, name string, id int64) error {
	c := f.client(tok)
	hooks, err := all[bbHook](ctx, c, repoPath(owner, name)+"/hooks?pagelen=100")
	if errors.Is(err, pipeline.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, h := range hooks {
		if ID64(h.UUID) == id {
			_, err := c.do(ctx, http.MethodDelete, repoPath(owner, name)+"/hooks/"+url.PathEscape(h.UUID), nil, nil)
			if errors.Is(err, pipeline.ErrNotFound) {
				return nil
			}
			return err
		}
	}
	return nil
}

// CreateDeployKey implements pipeline.SCM: POST /deploy-keys (Bitbucket's
// deploy keys are read-only).
func (f *Forge) CreateDeployKey(ctx context.Context, tok pipeline.ForgeToken, owner, name, title, publicKey string) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	body := map[string]string{"key": publicKey, "label": title}
	if _, err := f.client(tok).do(ctx, http.MethodPost, repoPath(owner, name)+"/deploy-keys", body, &out); err != nil {
		return 0, err
	}
	if out.ID <= 0 {
		return 0, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket returned a deploy key without id")
	}
	return out.ID, nil
}

// DeleteDeployKey implements pipeline.SCM; a missing key is not an error.
func (f *Forge) DeleteDeployKey(ctx context.Context, tok pipeline.ForgeToken, owner, name string, id int64) error {
	_, err := f.client(tok).do(ctx, http.MethodDelete, repoPath(owner, name)+"/deploy-keys/"+strconv.FormatInt(id, 10), nil, nil)
	if errors.Is(err, pipeline.ErrNotFound) {
		return nil
	}
	return err
}

// StatusKey is the status key of a stage: its name, or, when longer than
// Bitbucket's 40 characters, its first 31 characters, "-" and 8 hex digits
// of its SHA-256 (stable, and distinct for names sharing a prefix).
func StatusKey(stage string) string {
	if len(stage) <= 40 {
		return stage
	}
	sum := sha256.Sum256([]byte(stage))
	return stage[:31] + "-" + hex.EncodeToString(sum[:4])
}

// statusState maps the engine's states to Bitbucket's.
func statusState(s string) string {
	switch s {
	case "pending":
		return "INPROGRESS"
	case "success":
		return "SUCCESSFUL"
	case "failure":
		return "FAILED"
	}
	return "STOPPED"
}

// SetCommitStatus implements pipeline.SCM: POST
// /commit/{sha}/statuses/build, key = the stage (see StatusKey).
func (f *Forge) SetCommitStatus(ctx context.Context, tok pipeline.ForgeToken, owner, name, sha string, st pipeline.CommitStatus) error {
	if !shaRE.MatchString(sha) {
		return pipeline.Invalid("commit", "%q is not a commit SHA", sha)
	}
	body := map[string]string{"key": StatusKey(st.Context), "state": statusState(st.State), "name": st.Context, "url": st.TargetURL, "description": st.Description}
	_, err := f.client(tok).do(ctx, http.MethodPost, repoPath(owner, name)+"/commit/"+sha+"/statuses/build", body, nil)
	return err
}
