package pipeline_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucket"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"
)

// Account linking on the in-memory store: alice signed in with GitHub has
// linked her Bitbucket account. Her GitHub session sees and creates
// Bitbucket pipelines through that connection; a user without one does
// not; an expired connection is named for reconnecting.
func TestALinkedForgeConnectionActsOnThatForgesPipelines(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	bb := fakebitbucket.New(t)
	bbAlice := bb.AddUser("alice")
	bbRepo := bb.AddRepo("acme", "bbapp")
	bbRepo.Grant("alice", "admin")
	bbf, err := bitbucket.New(bitbucket.Config{ClientID: bb.ClientID, ClientSecret: bb.ClientSecret, WebURL: bb.URL, APIURL: bb.APIURL})
	if err != nil {
		t.Fatal(err)
	}
	svc := pipeline.NewService(pipeline.ServiceConfig{Store: w.store, SCM: w.scm, Forges: pipeline.NewForges(w.scm, bbf), Logs: w.logs,
		PublicURL: "http://kontinuous.test", Logger: slog.New(slog.DiscardHandler), Engine: w.engine})
	ctx := t.Context()
	bbID := "bitbucket|" + bbAlice.UUID
	access, refresh, expiry := bb.IssueToken("alice")
	if err := w.store.PutUser(ctx, pipeline.User{ID: bbID, Login: "alice", Token: pipeline.ForgeToken{AccessToken: access, RefreshToken: refresh, Expiry: expiry}}); err != nil {
		t.Fatal(err)
	}
	if err := w.store.LinkUsers(ctx, "github|1001", bbID); err != nil {
		t.Fatal(err)
	}
	alice, carol := memCallers["alice"], memCallers["carol"]

	list, err := svc.AllRepositories(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range list.Repositories {
		names = append(names, r.Forge+":"+r.FullName)
	}
	if got := strings.Join(names, " "); got != "github:acme/app bitbucket:acme/bbapp" || len(list.Reconnect) != 0 {
		t.Fatalf("alice's repositories: %s (reconnect %v)", got, list.Reconnect)
	}

	_, err = svc.CreatePipeline(ctx, carol, pipeline.NewPipeline{Owner: "acme", Repo: "bbapp", Events: []string{"push"}, Forge: "bitbucket"})
	if !errors.Is(err, pipeline.ErrUnauthorized) || !strings.Contains(pipeline.PublicMessage(err), "not connected to bitbucket") {
		t.Fatalf("an unlinked user creates on bitbucket: %v", err)
	}
	p, err := svc.CreatePipeline(ctx, alice, pipeline.NewPipeline{Owner: "acme", Repo: "bbapp", Events: []string{"push"}, Forge: "bitbucket"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Forge != "bitbucket" || p.OwnerUserID != bbID || len(bbRepo.Hooks()) != 1 || len(bbRepo.DeployKeys()) != 1 {
		t.Fatalf("created %s owned by %s; hooks %+v keys %+v", p.Forge, p.OwnerUserID, bbRepo.Hooks(), bbRepo.DeployKeys())
	}
	if got, err := svc.GetPipeline(ctx, alice, "acme", "bbapp"); err != nil || got.ID != p.ID {
		t.Fatalf("alice's GitHub session reads the Bitbucket pipeline: %+v %v", got, err)
	}
	if a, err := svc.AccessOf(ctx, alice, "acme", "bbapp"); err != nil || a != (pipeline.Access{Read: true, Push: true, Admin: true}) {
		t.Fatalf("alice's access: %+v %v", a, err)
	}
	if _, err := svc.GetPipeline(ctx, carol, "acme", "bbapp"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("an unlinked GitHub user reads the Bitbucket pipeline: %v", err)
	}
	ps, err := svc.ListPipelines(ctx, alice)
	if err != nil || len(ps) != 2 || ps[0].Repo != "app" || ps[1].Repo != "bbapp" {
		t.Fatalf("alice's pipelines: %+v %v", ps, err)
	}
	if ps, err := svc.ListPipelines(ctx, carol); err != nil || len(ps) != 1 || ps[0].Repo != "app" {
		t.Fatalf("carol's pipelines: %+v %v", ps, err)
	}

	// Bitbucket refuses to refresh the connection (its refresh token was
	// revoked): it is marked expired and named for reconnecting.
	bb.RevokeRefreshTokens()
	bb.ExpireAccessTokens()
	u, err := w.store.GetUser(ctx, bbID)
	if err != nil {
		t.Fatal(err)
	}
	u.Token.Expiry = time.Now().Add(-time.Minute)
	if err := w.store.PutUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	list, err = svc.AllRepositories(ctx, alice)
	if err != nil || len(list.Repositories) != 1 || strings.Join(list.Reconnect, ",") != "bitbucket" {
		t.Fatalf("with the connection expired: %+v %v", list, err)
	}
	if u, err := w.store.GetUser(ctx, bbID); err != nil || !u.Token.Expired || pipeline.ConnectionStatus(u.Token) != "expired" {
		t.Fatalf("the stored connection: %+v %v", u.Token, err)
	}
	if _, err := svc.GetPipeline(ctx, alice, "acme", "bbapp"); !errors.Is(err, pipeline.ErrUnauthorized) || !strings.Contains(pipeline.PublicMessage(err), "/api/v1/login/bitbucket/authorize") {
		t.Fatalf("reading through an expired connection: %v", err)
	}
	if ps, err := svc.ListPipelines(ctx, alice); err != nil || len(ps) != 1 || ps[0].Repo != "app" {
		t.Fatalf("alice's pipelines with the connection expired: %+v %v", ps, err)
	}
	conns, err := pipeline.Connections(ctx, w.store, "github|1001")
	if err != nil || len(conns) != 2 || conns[0].Forge != "github" || conns[1].Forge != "bitbucket" || conns[1].User.ID != bbID {
		t.Fatalf("alice's connections: %+v %v", conns, err)
	}
}
