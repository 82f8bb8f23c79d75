package fakegithub

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// ZeroSHA is the SHA GitHub sends for a ref that does not exist (before a
// branch is created, after it is deleted).
const ZeroSHA = "0000000000000000000000000000000000000000"

// ForkOwner is the login that owns the fork in PullRequestPayload(..., fork
// = true) and sends that event.
const ForkOwner = "contributor"

// SignPayload returns the X-Hub-Signature-256 value for body: "sha256=<hex
// HMAC-SHA256 of body keyed with secret>".
func SignPayload(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func signSHA1(secret string, body []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic("fakegithub: encode payload: " + err.Error())
	}
	return b
}

// webhookRepo is the repository object of a webhook payload. Push events
// carry Unix timestamps and an owner with name and email.
func (s *Server) webhookRepo(r *Repo, push bool) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.repoJSON(r, -1)
	if push {
		owner := s.accountJSON(r.Owner)
		owner["name"] = r.Owner
		owner["email"] = strings.ToLower(r.Owner) + "@users.noreply.github.com"
		m["owner"] = owner
		m["created_at"] = r.created.Unix()
		m["pushed_at"] = s.now().Unix()
		m["master_branch"] = r.DefaultBranch
	}
	return m
}

func (s *Server) account(login string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accountJSON(login)
}

// commitInfo describes a commit of r for payloads; a SHA the repository
// does not have gets a made-up description.
func (r *Repo) commitInfo(sha string) map[string]any {
	full := r.Owner + "/" + r.Name
	c := map[string]any{
		"id": sha, "tree_id": ZeroSHA, "distinct": true, "message": "commit " + sha,
		"timestamp": ts(r.s.clock()), "url": r.s.URL + "/" + full + "/commit/" + sha,
		"author":    map[string]any{"name": r.Owner, "email": strings.ToLower(r.Owner) + "@users.noreply.github.com", "username": r.Owner},
		"committer": map[string]any{"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
		"added":     []string{}, "removed": []string{}, "modified": []string{},
	}
	if !gitrepo.IsSHA(sha) {
		return c
	}
	out, err := r.Git(nil, "log", "-1", "--format=%T%x00%an%x00%ae%x00%at%x00%B", sha, "--")
	if err != nil {
		return c
	}
	f := strings.SplitN(string(out), "\x00", 5)
	if len(f) != 5 {
		return c
	}
	at, _ := strconv.ParseInt(f[3], 10, 64) // git prints a number
	c["tree_id"] = f[0]
	c["author"] = map[string]any{"name": f[1], "email": f[2], "username": f[1]}
	c["timestamp"] = ts(time.Unix(at, 0))
	c["message"] = strings.TrimRight(f[4], "\n")
	if out, err := r.Git(nil, "diff-tree", "-r", "--root", "--no-commit-id", "--name-status", "-z", sha); err == nil {
		parts := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
		added, removed, modified := []string{}, []string{}, []string{}
		for i := 0; i+1 < len(parts); i += 2 {
			switch parts[i] {
			case "A":
				added = append(added, parts[i+1])
			case "D":
				removed = append(removed, parts[i+1])
			default:
				modified = append(modified, parts[i+1])
			}
		}
		c["added"], c["removed"], c["modified"] = added, removed, modified
	}
	return c
}

// PushPayload returns a push webhook payload for r: ref refs/heads/<branch>
// (a branch that starts with "refs/", such as refs/tags/v1, is used as
// is), before and after SHAs (ZeroSHA or "" before: a new branch; ZeroSHA
// after: a deletion), pusher the login that pushed (also the sender).
func PushPayload(r *Repo, branch, before, after, pusher string) []byte {
	s := r.s
	ref := branch
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + branch
	}
	if before == "" {
		before = ZeroSHA
	}
	deleted := after == ZeroSHA
	full := r.Owner + "/" + r.Name
	var head any
	commits := []any{}
	if !deleted {
		c := r.commitInfo(after)
		head = c
		commits = append(commits, c)
	}
	p := map[string]any{
		"ref":         ref,
		"before":      before,
		"after":       after,
		"created":     before == ZeroSHA,
		"deleted":     deleted,
		"forced":      false,
		"base_ref":    nil,
		"compare":     fmt.Sprintf("%s/%s/compare/%.12s...%.12s", s.URL, full, before, after),
		"commits":     commits,
		"head_commit": head,
		"repository":  s.webhookRepo(r, true),
		"pusher":      map[string]any{"name": pusher, "email": strings.ToLower(pusher) + "@users.noreply.github.com"},
		"sender":      s.account(pusher),
	}
	return mustJSON(p)
}

// PullRequestPayload returns a pull_request webhook payload for r: action
// ("opened", "synchronize", ...), the pull request's number, its head
// branch and SHA, based on r's default branch. With fork the head lives in
// ForkOwner's fork (another repository id) and ForkOwner sends it;
// otherwise r's owner does.
func PullRequestPayload(r *Repo, action string, number int, headRef, headSHA string, fork bool) []byte {
	s := r.s
	base := s.webhookRepo(r, false)
	headRepo, sender := base, r.Owner
	if fork {
		sender = ForkOwner
		headRepo = s.webhookRepo(r, false)
		full := ForkOwner + "/" + r.Name
		headRepo["id"] = r.ID + 500000
		headRepo["node_id"] = fmt.Sprintf("R_%d", r.ID+500000)
		headRepo["full_name"] = full
		headRepo["fork"] = true
		headRepo["owner"] = s.account(ForkOwner)
		headRepo["html_url"] = s.URL + "/" + full
		headRepo["url"] = s.APIURL + "repos/" + full
		headRepo["clone_url"] = s.URL + "/git/" + full + ".git"
	}
	state := "open"
	if action == "closed" {
		state = "closed"
	}
	full := r.Owner + "/" + r.Name
	now := ts(s.clock())
	pr := map[string]any{
		"url":        fmt.Sprintf("%srepos/%s/pulls/%d", s.APIURL, full, number),
		"id":         r.ID*1000 + int64(number),
		"node_id":    fmt.Sprintf("PR_%d_%d", r.ID, number),
		"html_url":   fmt.Sprintf("%s/%s/pull/%d", s.URL, full, number),
		"number":     number,
		"state":      state,
		"locked":     false,
		"title":      fmt.Sprintf("Pull request #%d", number),
		"body":       nil,
		"user":       s.account(sender),
		"created_at": now,
		"updated_at": now,
		"draft":      false,
		"merged":     false,
		"head": map[string]any{
			"label": headRepo["owner"].(map[string]any)["login"].(string) + ":" + headRef,
			"ref":   headRef, "sha": headSHA, "user": headRepo["owner"], "repo": headRepo,
		},
		"base": map[string]any{
			"label": r.Owner + ":" + r.DefaultBranch,
			"ref":   r.DefaultBranch, "sha": r.Head(r.DefaultBranch), "user": base["owner"], "repo": base,
		},
	}
	return mustJSON(map[string]any{
		"action":       action,
		"number":       number,
		"pull_request": pr,
		"repository":   base,
		"sender":       s.account(sender),
	})
}

// PingPayload returns the ping payload GitHub sends when a webhook is
// created, describing r's first installed hook (if any).
func PingPayload(r *Repo) []byte {
	s := r.s
	s.mu.Lock()
	h := hookRec{Hook: Hook{Active: true, Events: []string{"push"}, ContentType: "json"}, insecureSSL: "0"}
	if len(r.hooks) > 0 {
		h = r.hooks[0]
	}
	hook := s.hookJSON(r, h)
	s.mu.Unlock()
	return mustJSON(map[string]any{
		"zen":        "Keep it logically awesome.",
		"hook_id":    h.ID,
		"hook":       hook,
		"repository": s.webhookRepo(r, false),
		"sender":     s.account(r.Owner),
	})
}

// DeploymentPayload returns a deployment webhook payload for r: a
// deployment of sha (ref) to environment, created by r's owner.
func DeploymentPayload(r *Repo, sha, ref, environment string) []byte {
	s := r.s
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.mu.Unlock()
	now := ts(s.clock())
	full := r.Owner + "/" + r.Name
	return mustJSON(map[string]any{
		"action": "created",
		"deployment": map[string]any{
			"url": fmt.Sprintf("%srepos/%s/deployments/%d", s.APIURL, full, id),
			"id":  id, "node_id": fmt.Sprintf("DE_%d", id), "sha": sha, "ref": ref, "task": "deploy",
			"payload": map[string]any{}, "environment": environment, "description": nil,
			"creator": s.account(r.Owner), "created_at": now, "updated_at": now,
		},
		"repository": s.webhookRepo(r, false),
		"sender":     s.account(r.Owner),
	})
}

// Delivery is the outcome of delivering an event to one webhook.
type Delivery struct {
	HookID int64
	URL    string
	// GUID is the X-GitHub-Delivery header sent.
	GUID string
	// StatusCode and Body of the answer (Body cut to 64 KiB).
	StatusCode int
	Body       string
	// Err is set when the hook's URL could not be reached.
	Err error
}

// Deliver sends payload as event to every active webhook of owner/name that
// subscribes to it ("ping" goes to all; "*" subscribes to everything),
// signed with each hook's secret (X-Hub-Signature-256 and the legacy
// X-Hub-Signature), as GitHub's hookshot does, and reports each answer.
func (s *Server) Deliver(ctx context.Context, owner, name, event string, payload []byte) ([]Delivery, error) {
	s.mu.Lock()
	r := s.repos[repoKey(owner, name)]
	var hooks []Hook
	if r != nil {
		for _, h := range r.hooks {
			if h.Active && (event == "ping" || slices.Contains(h.Events, event) || slices.Contains(h.Events, "*")) {
				hooks = append(hooks, h.Hook)
			}
		}
	}
	s.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("fakegithub: no repository %s/%s", owner, name)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var out []Delivery
	for _, h := range hooks {
		d := Delivery{HookID: h.ID, URL: h.URL, GUID: newGUID()}
		body, ctype := payload, "application/json"
		if h.ContentType == "form" {
			body, ctype = []byte(url.Values{"payload": {string(payload)}}.Encode()), "application/x-www-form-urlencoded"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
		if err != nil {
			d.Err = err
			out = append(out, d)
			continue
		}
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("User-Agent", "GitHub-Hookshot/fake")
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", d.GUID)
		req.Header.Set("X-GitHub-Hook-ID", strconv.FormatInt(h.ID, 10))
		req.Header.Set("X-GitHub-Hook-Installation-Target-Type", "repository")
		req.Header.Set("X-GitHub-Hook-Installation-Target-ID", strconv.FormatInt(r.ID, 10))
		if h.Secret != "" {
			req.Header.Set("X-Hub-Signature-256", SignPayload(h.Secret, body))
			req.Header.Set("X-Hub-Signature", signSHA1(h.Secret, body))
		}
		resp, err := client.Do(req)
		if err != nil {
			d.Err = err
			out = append(out, d)
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // a short read still reports the status
		_ = resp.Body.Close()                                 // read-only body
		d.StatusCode, d.Body = resp.StatusCode, string(b)
		out = append(out, d)
	}
	return out, nil
}

func newGUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
