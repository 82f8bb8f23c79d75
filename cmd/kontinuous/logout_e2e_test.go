package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
)

// A log out through the real server revokes the token there and, through
// etcd, on every other server of the same etcd: the servers are wired
// with the store's revocations.
func TestLogoutRevokesTheTokenOnThisAndEveryServerOfTheSameEtcd(t *testing.T) {
	etcd := pipelinetest.StartEtcdServer(t, t.TempDir())
	endpoints := strings.Join(etcd.Endpoints(), ",")
	a := newWorld(t, "--etcd-endpoints", endpoints)
	b := newWorld(t, "--etcd-endpoints", endpoints)

	secret, err := auth.DecodeSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	// A token as the login hands out (with an id, so it can be revoked).
	tok, _, err := issuer.Issue(pipeline.User{ID: "github|1001", Login: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := issuer.Issue(pipeline.User{ID: "github|1001", Login: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*world{a, b} {
		expect(t, w.do("GET", "/api/v1/user", tok, nil), http.StatusOK)
	}

	expect(t, a.do("POST", "/api/v1/logout", tok, nil), http.StatusNoContent)
	expect(t, a.do("GET", "/api/v1/user", tok, nil), http.StatusUnauthorized)
	// The other server learns of it through etcd's watch.
	deadline := time.Now().Add(patience)
	for {
		r := b.do("GET", "/api/v1/user", tok, nil)
		if r.status == http.StatusUnauthorized {
			expect(t, r, http.StatusUnauthorized)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second server still accepts the logged-out token: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A second log out of the same token is refused like any revoked token.
	expect(t, b.do("POST", "/api/v1/logout", tok, nil), http.StatusUnauthorized)
	// Another token of the same user is untouched.
	for _, w := range []*world{a, b} {
		expect(t, w.do("GET", "/api/v1/user", other, nil), http.StatusOK)
	}
	// A server started afterwards on the same etcd refuses it from the start.
	c := newWorld(t, "--etcd-endpoints", endpoints)
	expect(t, c.do("GET", "/api/v1/user", tok, nil), http.StatusUnauthorized)
}
