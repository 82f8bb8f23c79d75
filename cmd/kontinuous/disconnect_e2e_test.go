package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestDisconnectALinkedForgeThroughTheServer: alice, signed in with
// GitHub, connects her Bitbucket account, creates a Bitbucket pipeline,
// and disconnects Bitbucket: refused (409, naming the pipeline) while it
// owns the pipeline, then removed (204) with its tokens; her GitHub
// identity cannot be disconnected and unknown forges are 404.
func TestDisconnectALinkedForgeThroughTheServer(t *testing.T) {
	w := newLinkWorld(t)
	alice := token(t, "alice", 1001, "tok-alice")

	expect(t, w.do("DELETE", "/api/v1/user/connections/bitbucket", "", nil), http.StatusUnauthorized)
	expect(t, w.do("DELETE", "/api/v1/user/connections/bitbucket", alice, nil), http.StatusNotFound)
	expect(t, w.do("DELETE", "/api/v1/user/connections/gitlab", alice, nil), http.StatusNotFound)
	r := w.do("DELETE", "/api/v1/user/connections/github", alice, nil)
	expect(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), "signed in with github") {
		t.Fatalf("disconnecting the sign-in forge: %s", r.body)
	}

	expect(t, bbOAuth(t, w.bb, w.app.URL, alice, "alice", alice), http.StatusOK)
	expect(t, w.do("POST", "/api/v1/pipelines", alice, map[string]any{"owner": "acme", "repo": "app", "forge": "bitbucket", "events": []string{"push"}}), http.StatusCreated)
	r = w.do("DELETE", "/api/v1/user/connections/bitbucket", alice, nil)
	expect(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), "acme/app") {
		t.Fatalf("refusal does not name the pipeline: %s", r.body)
	}
	var me userView
	w.do("GET", "/api/v1/user", alice, nil).json(t, &me)
	if len(me.Connections) != 1 || me.Connections[0].Forge != "bitbucket" {
		t.Fatalf("after a refused disconnect: %+v", me)
	}

	expect(t, w.do("DELETE", "/api/v1/pipelines/acme/app", alice, nil), http.StatusNoContent)
	expect(t, w.do("DELETE", "/api/v1/user/connections/bitbucket", alice, nil), http.StatusNoContent)
	r = w.do("GET", "/api/v1/user", alice, nil)
	expect(t, r, http.StatusOK)
	me = userView{}
	r.json(t, &me)
	if me.UserID != "github|1001" || len(me.Connections) != 0 {
		t.Fatalf("after disconnect: %s", r.body)
	}
	// Gone both ways and with its tokens: nothing of Bitbucket is listed
	// or usable from the GitHub session, and a second disconnect is 404.
	r = w.do("GET", "/api/v1/repositories", alice, nil)
	expect(t, r, http.StatusOK)
	if strings.Contains(string(r.body), `"forge":"bitbucket"`) {
		t.Fatalf("repositories after disconnect: %s", r.body)
	}
	expect(t, w.do("POST", "/api/v1/pipelines", alice, map[string]any{"owner": "acme", "repo": "app", "forge": "bitbucket", "events": []string{"push"}}), http.StatusUnauthorized)
	expect(t, w.do("DELETE", "/api/v1/user/connections/bitbucket", alice, nil), http.StatusNotFound)
	// The Bitbucket account may be linked again (to her, or to someone else).
	bob := token(t, "bob", 1002, "tok-bob")
	r = bbOAuth(t, w.bb, w.app.URL, bob, "alice", bob)
	expect(t, r, http.StatusOK)
	w.do("GET", "/api/v1/user", bob, nil).json(t, &me)
	if len(me.Connections) != 1 || me.Connections[0].Forge != "bitbucket" || me.Connections[0].Status != "connected" {
		t.Fatalf("bob after linking the freed account: %+v", me)
	}
}
