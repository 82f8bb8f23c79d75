package fakebitbucket

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// Sign returns X-Hub-Signature's value for body: "sha256=<hex HMAC-SHA256
// of body keyed with secret>".
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Delivery is one webhook delivery as Bitbucket sends it.
type Delivery struct {
	Event     string // X-Event-Key: repo:push, pullrequest:created, ...
	RequestID string // X-Request-UUID ("" = a fresh one)
	HookUUID  string // X-Hook-UUID
	// Signature overrides X-Hub-Signature ("" = signed with the secret;
	// "-" = unsigned).
	Signature string
	Body      []byte
}

// Deliver POSTs d to url signed with secret, as Bitbucket does, and
// returns the response (the caller closes its body).
func Deliver(ctx context.Context, url, secret string, d Delivery) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.Body))
	if err != nil {
		return nil, err
	}
	if d.RequestID == "" {
		d.RequestID = uuid()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Bitbucket-Webhooks/2.0")
	req.Header.Set("X-Event-Key", d.Event)
	req.Header.Set("X-Request-UUID", d.RequestID)
	req.Header.Set("X-Hook-UUID", d.HookUUID)
	req.Header.Set("X-Attempt-Number", "1")
	switch d.Signature {
	case "":
		req.Header.Set("X-Hub-Signature", Sign(secret, d.Body))
	case "-":
	default:
		req.Header.Set("X-Hub-Signature", d.Signature)
	}
	return http.DefaultClient.Do(req)
}

func (s *Server) repoRef(r *Repo) map[string]any {
	return map[string]any{"type": "repository", "uuid": r.UUID, "full_name": r.Workspace + "/" + r.Slug, "name": r.Slug,
		"workspace": map[string]string{"slug": r.Workspace}}
}

func (s *Server) actor(username string) map[string]any {
	s.mu.Lock()
	u := s.users[username]
	s.mu.Unlock()
	if u == nil {
		return map[string]any{"type": "user", "nickname": username}
	}
	return map[string]any{"type": "user", "uuid": u.UUID, "nickname": u.Username, "display_name": u.DisplayName, "account_id": u.AccountID}
}

// PushPayload is a repo:push body for branch moving to sha ("" = the
// branch was deleted: new is null).
func (s *Server) PushPayload(r *Repo, branch, sha, pusher string) []byte {
	var nw any
	if sha != "" {
		nw = map[string]any{"type": "branch", "name": branch, "target": map[string]any{"type": "commit", "hash": sha}}
	}
	return mustJSON(map[string]any{
		"actor": s.actor(pusher), "repository": s.repoRef(r),
		"push": map[string]any{"changes": []any{map[string]any{
			"new": nw, "old": map[string]any{"type": "branch", "name": branch},
			"created": false, "closed": sha == "", "forced": false,
		}}},
	})
}

// PullRequestPayload is a pullrequest:created|updated body: sourceBranch
// at sha (sent shortened to 12 characters, as Bitbucket does) into main;
// fork makes the source repository a different one.
func (s *Server) PullRequestPayload(r *Repo, id int, sourceBranch, sha, author string, fork bool) []byte {
	src := s.repoRef(r)
	if fork {
		src = map[string]any{"type": "repository", "uuid": "{" + uuid() + "}", "full_name": author + "/" + r.Slug, "name": r.Slug}
	}
	short := sha
	if len(short) > 12 {
		short = short[:12]
	}
	return mustJSON(map[string]any{
		"actor": s.actor(author), "repository": s.repoRef(r),
		"pullrequest": map[string]any{
			"id": id, "title": "change", "state": "OPEN", "author": s.actor(author),
			"source":      map[string]any{"branch": map[string]string{"name": sourceBranch}, "commit": map[string]string{"hash": short}, "repository": src},
			"destination": map[string]any{"branch": map[string]string{"name": "main"}, "commit": map[string]string{"hash": r.Head("main")[:12]}, "repository": s.repoRef(r)},
		},
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
