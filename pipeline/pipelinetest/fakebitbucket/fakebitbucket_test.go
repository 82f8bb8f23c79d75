package fakebitbucket

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
)

func TestRefreshRotatesAndGitAcceptsTokenAuth(t *testing.T) {
	s := New(t)
	s.AddUser("alice")
	r := s.AddRepo("acme", "app")
	r.Grant("alice", "read")
	_, rt, _ := s.IssueToken("alice")

	refresh := func(tok string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/site/oauth2/access_token",
			strings.NewReader(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(s.ClientID, s.ClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, out := refresh(rt)
	if code != 200 || out["refresh_token"] == rt {
		t.Fatalf("refresh: %d %v", code, out)
	}
	if code, out := refresh(rt); code != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("reused refresh token: %d %v, want 400 invalid_grant", code, out)
	}
	if s.Refreshes() != 1 {
		t.Fatalf("refreshes = %d", s.Refreshes())
	}
	at := out["access_token"].(string)
	u, _ := url.Parse(r.CloneURL)
	u.User = url.UserPassword("x-token-auth", at)
	if b, err := exec.Command("git", "ls-remote", u.String(), "main").CombinedOutput(); err != nil || !strings.Contains(string(b), r.Head("main")) {
		t.Fatalf("ls-remote: %v %s", err, b)
	}
	u.User = url.UserPassword("x-token-auth", "nope")
	cmd := exec.Command("git", "ls-remote", u.String())
	cmd.Env = append(cmd.Environ(), "GIT_TERMINAL_PROMPT=0")
	if err := cmd.Run(); err == nil {
		t.Fatal("ls-remote with a bad token succeeded")
	}
}
