package bitbucketdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
)

// maxBody bounds the replies read (a raw file included).
const maxBody = 8 << 20

// call makes one REST call with tok and decodes a JSON reply into out (when
// not nil). The reply's headers are returned.
func (f *Forge) call(ctx context.Context, tok pipeline.ForgeToken, method, u string, body io.Reader, ctype string, out any) (http.Header, []byte, error) {
	if tok.AccessToken == "" {
		return nil, nil, pipeline.Errorf(pipeline.ErrUnauthorized, "no Bitbucket Data Center token; log in through /api/v1/login/bitbucket-dc/authorize")
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, nil, fmt.Errorf("bitbucketdc: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	// Data Center refuses state-changing calls without this header when
	// they are not JSON (XSRF protection).
	req.Header.Set("X-Atlassian-Token", "no-check")
	resp, err := f.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("bitbucketdc: %s: %w", method, ctx.Err())
		}
		return nil, nil, pipeline.Errorf(pipeline.ErrUpstream, "cannot reach Bitbucket Data Center at %s", f.base)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, pipeline.Errorf(pipeline.ErrUpstream, "reading Bitbucket Data Center's reply failed")
	}
	if resp.StatusCode >= 300 {
		return resp.Header, b, statusError(resp.StatusCode, b)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, nil, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket Data Center answered invalid JSON")
		}
	}
	return resp.Header, b, nil
}

var msgRe = regexp.MustCompile(`^[\pL\pN .,:;'"()/_@#+-]{1,200}$`)

// statusError maps an HTTP status to a pipeline sentinel with Data
// Center's first error message when it looks like plain text.
func statusError(status int, body []byte) error {
	var e struct {
		Errors []struct{ Message string } `json:"errors"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 && msgRe.MatchString(e.Errors[0].Message) {
		msg = ": " + e.Errors[0].Message
	}
	var kind error
	switch status {
	case http.StatusUnauthorized:
		kind = pipeline.ErrUnauthorized
	case http.StatusForbidden:
		kind = pipeline.ErrForbidden
	case http.StatusNotFound:
		kind = pipeline.ErrNotFound
	case http.StatusConflict:
		kind = pipeline.ErrConflict
	case http.StatusTooManyRequests:
		kind = pipeline.ErrRateLimited
	default:
		kind = pipeline.ErrUpstream
	}
	return pipeline.Errorf(kind, "Bitbucket Data Center answered HTTP %d%s", status, msg)
}

func (f *Forge) repoURL(owner, name string) string {
	return f.api + "/projects/" + url.PathEscape(owner) + "/repos/" + url.PathEscape(name)
}

type dcUser struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Slug string `json:"slug"`
}

type dcRepo struct {
	ID      int64  `json:"id"`
	Slug    string `json:"slug"`
	Public  bool   `json:"public"`
	Project struct {
		Key string `json:"key"`
	} `json:"project"`
	Links struct {
		Clone []struct{ Href, Name string } `json:"clone"`
	} `json:"links"`
}

func (r dcRepo) repository() pipeline.Repository {
	out := pipeline.Repository{ID: r.ID, Owner: r.Project.Key, Name: r.Slug, FullName: r.Project.Key + "/" + r.Slug, Private: !r.Public}
	for _, c := range r.Links.Clone {
		if c.Name == "http" || c.Name == "https" {
			out.CloneURL = c.Href
		}
	}
	return out
}

type pageOf[T any] struct {
	Values        []T  `json:"values"`
	IsLastPage    bool `json:"isLastPage"`
	NextPageStart int  `json:"nextPageStart"`
}

// maxPages bounds a listing (1000 a page).
const maxPages = 50

// list reads every page of u (with its query) into a slice.
func list[T any](ctx context.Context, f *Forge, tok pipeline.ForgeToken, u string) ([]T, error) {
	var out []T
	start := 0
	for i := 0; i < maxPages; i++ {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		var p pageOf[T]
		if _, _, err := f.call(ctx, tok, http.MethodGet, u+sep+"limit=1000&start="+strconv.Itoa(start), nil, "", &p); err != nil {
			return nil, err
		}
		out = append(out, p.Values...)
		if p.IsLastPage || p.NextPageStart <= start {
			return out, nil
		}
		start = p.NextPageStart
	}
	return out, nil
}

// User implements pipeline.SCM: Data Center names the token's user in the
// X-AUSERNAME header of any authenticated REST reply; its numeric id comes
// from the user search.
func (f *Forge) User(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeUser, error) {
	h, _, err := f.call(ctx, tok, http.MethodGet, f.api+"/application-properties", nil, "", nil)
	if err != nil {
		return pipeline.ForgeUser{}, fmt.Errorf("bitbucketdc: user: %w", err)
	}
	name := h.Get("X-AUSERNAME")
	if name == "" {
		return pipeline.ForgeUser{}, pipeline.Errorf(pipeline.ErrUnauthorized, "Bitbucket Data Center did not recognise the token")
	}
	users, err := list[dcUser](ctx, f, tok, f.api+"/users?filter="+url.QueryEscape(name))
	if err != nil {
		return pipeline.ForgeUser{}, fmt.Errorf("bitbucketdc: user: %w", err)
	}
	for _, u := range users {
		if strings.EqualFold(u.Name, name) && u.ID != 0 {
			return pipeline.ForgeUser{ID: u.ID, Login: u.Name}, nil
		}
	}
	return pipeline.ForgeUser{}, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket Data Center did not list the token's user")
}

// Repositories implements pipeline.SCM: every repository the user can
// read, with their permission on it.
func (f *Forge) Repositories(ctx context.Context, tok pipeline.ForgeToken) ([]pipeline.Repository, error) {
	levels := map[string]map[int64]bool{}
	for _, lvl := range []string{"REPO_WRITE", "REPO_ADMIN"} {
		rs, err := list[dcRepo](ctx, f, tok, f.api+"/repos?permission="+lvl)
		if err != nil {
			return nil, fmt.Errorf("bitbucketdc: repositories: %w", err)
		}
		levels[lvl] = map[int64]bool{}
		for _, r := range rs {
			levels[lvl][r.ID] = true
		}
	}
	rs, err := list[dcRepo](ctx, f, tok, f.api+"/repos?permission=REPO_READ")
	if err != nil {
		return nil, fmt.Errorf("bitbucketdc: repositories: %w", err)
	}
	out := make([]pipeline.Repository, 0, len(rs))
	for _, r := range rs {
		repo := r.repository()
		repo.Permissions = &pipeline.Access{Read: true, Push: levels["REPO_WRITE"][r.ID], Admin: levels["REPO_ADMIN"][r.ID]}
		out = append(out, repo)
	}
	return out, nil
}

// Repository implements pipeline.SCM.
func (f *Forge) Repository(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Repository, error) {
	var r dcRepo
	if _, _, err := f.call(ctx, tok, http.MethodGet, f.repoURL(owner, name), nil, "", &r); err != nil {
		return pipeline.Repository{}, fmt.Errorf("bitbucketdc: repository %s/%s: %w", owner, name, err)
	}
	out := r.repository()
	var b struct {
		DisplayID string `json:"displayId"`
	}
	if _, _, err := f.call(ctx, tok, http.MethodGet, f.repoURL(owner, name)+"/default-branch", nil, "", &b); err == nil {
		out.DefaultBranch = b.DisplayID
	} else if !errors.Is(err, pipeline.ErrNotFound) {
		return pipeline.Repository{}, fmt.Errorf("bitbucketdc: default branch of %s/%s: %w", owner, name, err)
	}
	return out, nil
}

// Permission implements pipeline.SCM (cached for PermissionTTL).
func (f *Forge) Permission(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, error) {
	p, _, err := f.RepoAccess(ctx, tok, owner, name)
	return p, err
}

// RepoAccess implements pipeline.RepoAccessor: the permission from the
// project's repositories listed at REPO_ADMIN, then REPO_WRITE, then
// REPO_READ (none when the repository is not readable).
func (f *Forge) RepoAccess(ctx context.Context, tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, int64, error) {
	if p, id, ok := f.perms.Access(tok, owner, name); ok {
		return p, id, nil
	}
	perm, id := pipeline.PermNone, int64(0)
	for _, lvl := range []struct {
		name string
		p    pipeline.Permission
	}{{"REPO_ADMIN", pipeline.PermAdmin}, {"REPO_WRITE", pipeline.PermPush}, {"REPO_READ", pipeline.PermRead}} {
		rs, err := list[dcRepo](ctx, f, tok, f.api+"/repos?projectkey="+url.QueryEscape(owner)+"&permission="+lvl.name)
		if err != nil {
			return pipeline.PermNone, 0, fmt.Errorf("bitbucketdc: permission on %s/%s: %w", owner, name, err)
		}
		for _, r := range rs {
			if strings.EqualFold(r.Project.Key, owner) && strings.EqualFold(r.Slug, name) {
				perm, id = lvl.p, r.ID
				break
			}
		}
		if perm != pipeline.PermNone {
			break
		}
	}
	f.perms.PutAccess(tok, owner, name, perm, id)
	return perm, id, nil
}

// BranchHead implements pipeline.SCM.
func (f *Forge) BranchHead(ctx context.Context, tok pipeline.ForgeToken, owner, name, branch string) (string, error) {
	bs, err := list[struct {
		DisplayID    string `json:"displayId"`
		LatestCommit string `json:"latestCommit"`
	}](ctx, f, tok, f.repoURL(owner, name)+"/branches?filterText="+url.QueryEscape(branch))
	if err != nil {
		return "", fmt.Errorf("bitbucketdc: branch %s of %s/%s: %w", branch, owner, name, err)
	}
	for _, b := range bs {
		if b.DisplayID == branch {
			return b.LatestCommit, nil
		}
	}
	return "", pipeline.Errorf(pipeline.ErrNotFound, "branch %s of %s/%s not found", branch, owner, name)
}

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

// FileAt implements pipeline.SCM. File.SHA is the commit the file was
// read at (Data Center's edits name the commit they replace, not a blob).
func (f *Forge) FileAt(ctx context.Context, tok pipeline.ForgeToken, owner, name, path, ref string) (pipeline.File, error) {
	commit := ref
	if !shaRe.MatchString(ref) {
		branch := ref
		if branch == "" {
			r, err := f.Repository(ctx, tok, owner, name)
			if err != nil {
				return pipeline.File{}, err
			}
			branch = r.DefaultBranch
		}
		var err error
		if commit, err = f.BranchHead(ctx, tok, owner, name, strings.TrimPrefix(branch, "refs/heads/")); err != nil {
			return pipeline.File{}, err
		}
	}
	esc := make([]string, 0, 4)
	for _, seg := range strings.Split(path, "/") {
		esc = append(esc, url.PathEscape(seg))
	}
	_, b, err := f.call(ctx, tok, http.MethodGet, f.repoURL(owner, name)+"/raw/"+strings.Join(esc, "/")+"?at="+url.QueryEscape(commit), nil, "", nil)
	if err != nil {
		return pipeline.File{}, fmt.Errorf("bitbucketdc: %s at %s in %s/%s: %w", path, commit, owner, name, err)
	}
	return pipeline.File{Content: b, SHA: commit}, nil
}

// PutFile implements pipeline.SCM through the browse edit endpoint; sha is
// the commit the edit replaces ("" when creating).
func (f *Forge) PutFile(ctx context.Context, tok pipeline.ForgeToken, owner, name, path, branch, message string, content []byte, sha string) (string, error) {
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	fields := [][2]string{{"branch", branch}, {"content", string(content)}, {"message", message}}
	if sha != "" {
		fields = append(fields, [2]string{"sourceCommitId", sha})
	}
	for _, kv := range fields {
		if err := w.WriteField(kv[0], kv[1]); err != nil {
			return "", fmt.Errorf("bitbucketdc: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return "", fmt.Errorf("bitbucketdc: %w", err)
	}
	var c struct {
		ID string `json:"id"`
	}
	if _, _, err := f.call(ctx, tok, http.MethodPut, f.repoURL(owner, name)+"/browse/"+path, &body, w.FormDataContentType(), &c); err != nil {
		return "", fmt.Errorf("bitbucketdc: edit %s in %s/%s: %w", path, owner, name, err)
	}
	return c.ID, nil
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("bitbucketdc: %w", err)
	}
	return bytes.NewReader(b), nil
}

// CreateBranch implements pipeline.SCM.
func (f *Forge) CreateBranch(ctx context.Context, tok pipeline.ForgeToken, owner, name, branch, sha string) error {
	body, err := jsonBody(map[string]string{"name": branch, "startPoint": sha})
	if err != nil {
		return err
	}
	if _, _, err := f.call(ctx, tok, http.MethodPost, f.repoURL(owner, name)+"/branches", body, "application/json", nil); err != nil {
		return fmt.Errorf("bitbucketdc: create branch %s in %s/%s: %w", branch, owner, name, err)
	}
	return nil
}

// CreatePullRequest implements pipeline.SCM.
func (f *Forge) CreatePullRequest(ctx context.Context, tok pipeline.ForgeToken, owner, name, title, head, base string) (string, error) {
	body, err := jsonBody(map[string]any{
		"title":   title,
		"fromRef": map[string]string{"id": "refs/heads/" + head},
		"toRef":   map[string]string{"id": "refs/heads/" + base},
	})
	if err != nil {
		return "", err
	}
	var pr struct {
		Links struct {
			Self []struct{ Href string } `json:"self"`
		} `json:"links"`
	}
	if _, _, err := f.call(ctx, tok, http.MethodPost, f.repoURL(owner, name)+"/pull-requests", body, "application/json", &pr); err != nil {
		return "", fmt.Errorf("bitbucketdc: open a pull request in %s/%s: %w", owner, name, err)
	}
	if len(pr.Links.Self) == 0 {
		return "", nil
	}
	return pr.Links.Self[0].Href, nil
}

// hookEvents maps Kontinuous's event names to Data Center's.
var hookEvents = map[string][]string{
	pipeline.EventPush:        {"repo:refs_changed"},
	pipeline.EventPullRequest: {"pr:opened", "pr:from_ref_updated"},
}

// CreateWebhook implements pipeline.SCM: a webhook with the secret (Data
// Center then signs deliveries with X-Hub-Signature) for the events that
// have a Data Center counterpart.
func (f *Forge) CreateWebhook(ctx context.Context, tok pipeline.ForgeToken, owner, name string, h pipeline.Hook) (int64, error) {
	var events []string
	for _, e := range h.Events {
		events = append(events, hookEvents[e]...)
	}
	if len(events) == 0 {
		events = hookEvents[pipeline.EventPush]
	}
	body, err := jsonBody(map[string]any{
		"name": "kontinuous", "url": h.URL, "events": events, "active": true,
		"configuration": map[string]string{"secret": h.Secret},
	})
	if err != nil {
		return 0, err
	}
	var out struct {
		ID int64 `json:"id"`
	}
	if _, _, err := f.call(ctx, tok, http.MethodPost, f.repoURL(owner, name)+"/webhooks", body, "application/json", &out); err != nil {
		return 0, fmt.Errorf("bitbucketdc: create webhook in %s/%s: %w", owner, name, err)
	}
	return out.ID, nil
}

// DeleteWebhook implements pipeline.SCM.
func (f *Forge) DeleteWebhook(ctx context.Context, tok pipeline.ForgeToken, owner, name string, id int64) error {
	_, _, err := f.call(ctx, tok, http.MethodDelete, f.repoURL(owner, name)+"/webhooks/"+strconv.FormatInt(id, 10), nil, "", nil)
	if err != nil && !errors.Is(err, pipeline.ErrNotFound) {
		return fmt.Errorf("bitbucketdc: delete webhook of %s/%s: %w", owner, name, err)
	}
	return nil
}

func (f *Forge) keysURL(owner, name string) string {
	return f.base + "/rest/keys/latest/projects/" + url.PathEscape(owner) + "/repos/" + url.PathEscape(name) + "/ssh"
}

// CreateDeployKey implements pipeline.SCM as a read-only SSH access key.
func (f *Forge) CreateDeployKey(ctx context.Context, tok pipeline.ForgeToken, owner, name, title, publicKey string) (int64, error) {
	body, err := jsonBody(map[string]any{"key": map[string]string{"text": publicKey, "label": title}, "permission": "REPO_READ"})
	if err != nil {
		return 0, err
	}
	var out struct {
		Key struct {
			ID int64 `json:"id"`
		} `json:"key"`
	}
	if _, _, err := f.call(ctx, tok, http.MethodPost, f.keysURL(owner, name), body, "application/json", &out); err != nil {
		return 0, fmt.Errorf("bitbucketdc: add access key to %s/%s: %w", owner, name, err)
	}
	return out.Key.ID, nil
}

// DeleteDeployKey implements pipeline.SCM.
func (f *Forge) DeleteDeployKey(ctx context.Context, tok pipeline.ForgeToken, owner, name string, id int64) error {
	_, _, err := f.call(ctx, tok, http.MethodDelete, f.keysURL(owner, name)+"/"+strconv.FormatInt(id, 10), nil, "", nil)
	if err != nil && !errors.Is(err, pipeline.ErrNotFound) {
		return fmt.Errorf("bitbucketdc: remove access key of %s/%s: %w", owner, name, err)
	}
	return nil
}

// buildStates maps commit status states to Data Center's build states.
var buildStates = map[string]string{
	"pending": "INPROGRESS", "success": "SUCCESSFUL", "failure": "FAILED", "error": "FAILED",
}

// SetCommitStatus implements pipeline.SCM as a build status on the commit.
func (f *Forge) SetCommitStatus(ctx context.Context, tok pipeline.ForgeToken, owner, name, sha string, st pipeline.CommitStatus) error {
	state, ok := buildStates[st.State]
	if !ok {
		return pipeline.Invalid("state", "%q is not a commit status state", st.State)
	}
	if st.State == "failure" && strings.Contains(strings.ToLower(st.Description), "cancel") {
		state = "CANCELLED"
	}
	body, err := jsonBody(map[string]string{"state": state, "key": st.Context, "name": st.Context, "url": st.TargetURL, "description": st.Description})
	if err != nil {
		return err
	}
	if _, _, err := f.call(ctx, tok, http.MethodPost, f.repoURL(owner, name)+"/commits/"+url.PathEscape(sha)+"/builds", body, "application/json", nil); err != nil {
		return fmt.Errorf("bitbucketdc: build status on %s in %s/%s: %w", sha, owner, name, err)
	}
	return nil
}
