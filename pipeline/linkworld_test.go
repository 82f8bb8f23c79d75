package pipeline_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucket"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/memstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// watchedStore is the in-memory store with things a test needs to see
// or steer: it counts GetPipeline calls, and it runs onFirstGetPipeline
// (once) just before the first one answers, beforeLock before each
// LockUser and beforeUnlink before each UnlinkUser, to make something
// happen in the middle of a use case. LinkStore and UserLocker come from
// memstore. Set the hooks before the use case starts.
type watchedStore struct {
	*memstore.Store
	pipelineReads      atomic.Int64
	once               sync.Once
	onFirstGetPipeline func()
	beforeLock         func(id string)
	beforeUnlink       func()
}

func (s *watchedStore) LockUser(ctx context.Context, id string) (func(), error) {
	if s.beforeLock != nil {
		s.beforeLock(id)
	}
	return s.Store.LockUser(ctx, id)
}

func (s *watchedStore) UnlinkUser(ctx context.Context, id, forge, other string) (bool, error) {
	if s.beforeUnlink != nil {
		s.beforeUnlink()
	}
	return s.Store.UnlinkUser(ctx, id, forge, other)
}

func (s *watchedStore) GetPipeline(ctx context.Context, owner, repo string) (pipeline.Pipeline, error) {
	s.pipelineReads.Add(1)
	if s.onFirstGetPipeline != nil {
		s.once.Do(s.onFirstGetPipeline)
	}
	return s.Store.GetPipeline(ctx, owner, repo)
}

// linkWorld is alice signed in with GitHub (github|1001, repository
// acme/app there too) with her Bitbucket account linked (admin of
// Bitbucket's acme/app), on stand-ins of both forges and a watchedStore.
type linkWorld struct {
	bb    *fakebitbucket.Server
	bbf   *bitbucket.Forge
	repo  *fakebitbucket.Repo // Bitbucket's acme/app
	gh    *fakegithub.Server
	store *watchedStore
	svc   *pipeline.Service
	// bbUser is alice's Bitbucket user as stored, with a live token pair.
	bbUser pipeline.User
	// github is alice as a request signed in with GitHub resolves her.
	github pipeline.Caller
}

func newLinkWorld(t *testing.T) *linkWorld {
	t.Helper()
	ctx := t.Context()
	w := &linkWorld{bb: fakebitbucket.New(t), gh: fakegithub.New(t), store: &watchedStore{Store: memstore.New()}}
	alice := w.bb.AddUser("alice")
	w.repo = w.bb.AddRepo("acme", "app")
	w.repo.Grant("alice", "admin")
	w.gh.AddUser("alice", 1001, "tok-alice")
	w.gh.AddRepo("acme", "app")
	w.gh.Grant("alice", "acme", "app", "admin")
	var err error
	w.bbf, err = bitbucket.New(bitbucket.Config{ClientID: w.bb.ClientID, ClientSecret: w.bb.ClientSecret, WebURL: w.bb.URL, APIURL: w.bb.APIURL})
	if err != nil {
		t.Fatal(err)
	}
	ghf, err := githubscm.New(githubscm.Config{APIURL: w.gh.APIURL})
	if err != nil {
		t.Fatal(err)
	}
	at, rt, exp := w.bb.IssueToken("alice")
	w.bbUser = pipeline.User{ID: "bitbucket|" + alice.UUID, Login: "alice",
		Token: pipeline.ForgeToken{AccessToken: at, RefreshToken: rt, Expiry: exp}}
	w.github = pipeline.Caller{UserID: "github|1001", Login: "alice", Token: pipeline.ForgeToken{AccessToken: "tok-alice"}}
	if err := w.store.PutUser(ctx, w.bbUser); err != nil {
		t.Fatal(err)
	}
	if err := w.store.PutUser(ctx, pipeline.User{ID: w.github.UserID, Login: "alice", Token: w.github.Token}); err != nil {
		t.Fatal(err)
	}
	if err := w.store.LinkUsers(ctx, w.github.UserID, w.bbUser.ID); err != nil {
		t.Fatal(err)
	}
	w.svc = pipeline.NewService(pipeline.ServiceConfig{Store: w.store, SCM: ghf, Forges: pipeline.NewForges(ghf, w.bbf),
		PublicURL: "http://kontinuous.test"})
	return w
}
