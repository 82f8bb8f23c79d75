package etcdstore_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

func fullPipeline() pipeline.Pipeline {
	return pipeline.Pipeline{
		ID:     "fixed-id",
		Owner:  "Acme",
		Repo:   "Rocket",
		Events: []string{pipeline.EventPush, pipeline.EventPullRequest},
		Login:  "wile",
		Notif: []pipeline.Notif{{
			Type: "slack", Secrets: []string{"slackurl"}, Metadata: map[string]string{"channel": "#builds"},
		}},
		Secrets:          []string{"ignored-on-create"},
		Vars:             map[string]string{"REGION": "eu"},
		LatestBuild:      &pipeline.BuildSummary{Number: 99},
		OwnerUserID:      "github|1001",
		Forge:            "github",
		RepoID:           42,
		CloneURL:         "https://github.example/Acme/Rocket.git",
		DefaultBranch:    "main",
		WebhookID:        7,
		WebhookSecret:    "whsec-PLAINTEXT-1",
		DeployKeyID:      8,
		DeployKeyPublic:  "ssh-ed25519 AAAAC3Nz public",
		DeployKeyPrivate: "-----BEGIN OPENSSH PRIVATE KEY----- PLAINTEXT-2",
		ForkSecrets:      true,
		Namespace:        "team-acme",
		Created:          1_700_000_000_000_000_000,
	}
}

func TestPipelineRoundTripKeepsEveryField(t *testing.T) {
	s := newStore(t)
	in := fullPipeline()
	requireAllFieldsSet(t, in, "Orphaned") // computed per caller, never stored

	created, err := s.CreatePipeline(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.Secrets = []string{} // secret names belong to PutSecret
	want.LatestBuild = nil    // not stored; derived from builds
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("CreatePipeline result (-want +got):\n%s", diff)
	}
	got, err := s.GetPipeline(t.Context(), "acme", "rocket")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetPipeline (-want +got):\n%s", diff)
	}
}

func TestCreatePipelineAssignsIDAndCreated(t *testing.T) {
	s := newStore(t)
	a := mustCreatePipeline(t, s, "acme", "a")
	b := mustCreatePipeline(t, s, "acme", "b")
	if a.ID == "" || a.ID == b.ID {
		t.Errorf("pipeline IDs %q and %q: want distinct, non-empty", a.ID, b.ID)
	}
	if a.Created == 0 {
		t.Errorf("Created not set")
	}
}

func TestCreatePipelineConflictsCaseInsensitively(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "Acme", "App")
	for _, tc := range []struct{ owner, repo string }{{"Acme", "App"}, {"acme", "app"}, {"ACME", "aPp"}} {
		_, err := s.CreatePipeline(t.Context(), minimalPipeline(tc.owner, tc.repo))
		wantErr(t, err, pipeline.ErrConflict)
	}
}

func TestGetPipelineMatchesCaseInsensitivelyAndKeepsDisplayCase(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "Acme", "MyApp")
	mustCreateBuild(t, s, "ACME", "myapp", pipeline.Build{Status: pipeline.StatusPending})
	for _, tc := range []struct{ owner, repo string }{{"acme", "myapp"}, {"ACME", "MYAPP"}, {"Acme", "MyApp"}} {
		p, err := s.GetPipeline(t.Context(), tc.owner, tc.repo)
		if err != nil {
			t.Fatalf("GetPipeline(%s/%s): %v", tc.owner, tc.repo, err)
		}
		if p.Owner != "Acme" || p.Repo != "MyApp" {
			t.Errorf("GetPipeline(%s/%s) = %s/%s, want display case Acme/MyApp", tc.owner, tc.repo, p.Owner, p.Repo)
		}
		b, err := s.GetBuild(t.Context(), tc.owner, tc.repo, 1)
		if err != nil {
			t.Fatalf("GetBuild(%s/%s#1): %v", tc.owner, tc.repo, err)
		}
		if b.Owner != "Acme" || b.Repo != "MyApp" {
			t.Errorf("build owner/repo = %s/%s, want Acme/MyApp", b.Owner, b.Repo)
		}
	}
}

func TestGetPipelineMissingIsNotFound(t *testing.T) {
	s := newStore(t)
	_, err := s.GetPipeline(t.Context(), "nobody", "nothing")
	wantErr(t, err, pipeline.ErrNotFound)
}

func TestInvalidOwnerOrRepoIsRefused(t *testing.T) {
	s := newStore(t)
	for _, tc := range []struct{ name, owner, repo string }{
		{"empty owner", "", "app"},
		{"empty repo", "acme", ""},
		{"slash", "acme/x", "app"},
		{"control", "acme", "app\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CreatePipeline(t.Context(), minimalPipeline(tc.owner, tc.repo))
			wantErr(t, err, pipeline.ErrInvalid)
			_, err = s.GetPipeline(t.Context(), tc.owner, tc.repo)
			wantErr(t, err, pipeline.ErrInvalid)
		})
	}
}

func TestGetAndListPipelinesFillLatestBuild(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "busy")
	mustCreatePipeline(t, s, "acme", "idle")
	mustCreatePipeline(t, s, "acme", "busy-too") // shares a key prefix with "busy"
	for range 3 {
		mustCreateBuild(t, s, "acme", "busy", pipeline.Build{Status: pipeline.StatusPending, Commit: "c"})
	}
	mustCreateBuild(t, s, "acme", "busy-too", pipeline.Build{Status: pipeline.StatusSuccess, Branch: "dev"})
	if err := s.DeleteBuild(t.Context(), "acme", "busy", 3); err != nil {
		t.Fatal(err)
	}

	p, err := s.GetPipeline(t.Context(), "acme", "busy")
	if err != nil {
		t.Fatal(err)
	}
	if p.LatestBuild == nil || p.LatestBuild.Number != 2 {
		t.Fatalf("GetPipeline LatestBuild = %+v, want build 2 (3 was deleted)", p.LatestBuild)
	}

	list, err := s.ListPipelines(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	latest := map[string]int{}
	for _, p := range list {
		n := 0
		if p.LatestBuild != nil {
			n = p.LatestBuild.Number
		}
		latest[p.Repo] = n
	}
	if diff := cmp.Diff(map[string]int{"busy": 2, "busy-too": 1, "idle": 0}, latest); diff != "" {
		t.Errorf("latest build per pipeline (-want +got):\n%s", diff)
	}
	if list[0].Repo != "busy" || list[1].Repo != "busy-too" || list[2].Repo != "idle" {
		t.Errorf("ListPipelines order = %s, %s, %s; want sorted by owner/repo", list[0].Repo, list[1].Repo, list[2].Repo)
	}
}

func TestListPipelinesBatchesManyLatestBuildLookups(t *testing.T) {
	s := newStore(t)
	const n = 130 // more than one transaction's worth
	for i := range n {
		repo := "r" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		mustCreatePipeline(t, s, "acme", repo)
		if i%2 == 0 {
			mustCreateBuild(t, s, "acme", repo, pipeline.Build{})
		}
	}
	list, err := s.ListPipelines(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("ListPipelines returned %d, want %d", len(list), n)
	}
	with := 0
	for _, p := range list {
		if p.LatestBuild != nil {
			with++
		}
	}
	if with != n/2 {
		t.Errorf("%d pipelines have a latest build, want %d", with, n/2)
	}
}

func TestUpdatePipelineAppliesChangeAndKeepsIdentity(t *testing.T) {
	s := newStore(t)
	orig, err := s.CreatePipeline(t.Context(), fullPipeline())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutSecret(t.Context(), "acme", "rocket", pipeline.SecretSet{Name: "creds", Data: map[string]string{"K": "v"}}); err != nil {
		t.Fatal(err)
	}
	mustCreateBuild(t, s, "acme", "rocket", pipeline.Build{})

	got, err := s.UpdatePipeline(t.Context(), "ACME", "rocket", func(p *pipeline.Pipeline) error {
		p.Events = append(p.Events, pipeline.EventDeployment)
		p.WebhookSecret = "rotated-secret"
		p.ID, p.Created, p.Secrets = "hijack", 1, nil // not the caller's to change
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != orig.ID || got.Created != orig.Created {
		t.Errorf("ID/Created changed to %q/%d", got.ID, got.Created)
	}
	if diff := cmp.Diff([]string{"creds"}, got.Secrets); diff != "" {
		t.Errorf("Secrets changed by UpdatePipeline (-want +got):\n%s", diff)
	}
	if got.LatestBuild == nil || got.LatestBuild.Number != 1 {
		t.Errorf("LatestBuild = %+v, want build 1", got.LatestBuild)
	}
	again, err := s.GetPipeline(t.Context(), "acme", "rocket")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("stored pipeline differs from UpdatePipeline's result (-returned +stored):\n%s", diff)
	}
	if again.WebhookSecret != "rotated-secret" || again.DeployKeyPrivate != orig.DeployKeyPrivate {
		t.Errorf("secret fields after update: webhook changed=%v deploy key kept=%v",
			again.WebhookSecret == "rotated-secret", again.DeployKeyPrivate == orig.DeployKeyPrivate)
	}
}

func TestUpdatePipelineRefusesRepositoryChange(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	_, err := s.UpdatePipeline(t.Context(), "acme", "app", func(p *pipeline.Pipeline) error {
		p.Repo = "other"
		return nil
	})
	wantErr(t, err, pipeline.ErrInvalid)
	if _, err := s.GetPipeline(t.Context(), "acme", "other"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("GetPipeline(acme/other) = %v, want ErrNotFound", err)
	}
	p, err := s.UpdatePipeline(t.Context(), "acme", "app", func(p *pipeline.Pipeline) error {
		p.Owner = "ACME" // letter case is display only
		return nil
	})
	if err != nil || p.Owner != "ACME" {
		t.Errorf("case-only change: %v, owner %q", err, p.Owner)
	}
}

func TestUpdatePipelinePassesFnErrorAndWritesNothing(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	boom := errors.New("boom")
	_, err := s.UpdatePipeline(t.Context(), "acme", "app", func(p *pipeline.Pipeline) error {
		p.Login = "changed"
		return boom
	})
	wantErr(t, err, boom)
	p, err := s.GetPipeline(t.Context(), "acme", "app")
	if err != nil || p.Login != "octocat" {
		t.Errorf("after failed update: %v, login %q", err, p.Login)
	}
	_, err = s.UpdatePipeline(t.Context(), "acme", "missing", func(*pipeline.Pipeline) error { return nil })
	wantErr(t, err, pipeline.ErrNotFound)
}

func TestDeletePipelineRemovesItsRecordsButNotItsNumbering(t *testing.T) {
	s := newStore(t)
	cli := sharedClient(t)
	mustCreatePipeline(t, s, "acme", "app")
	mustCreatePipeline(t, s, "acme", "app-2") // a neighbour sharing a key prefix
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusRunning, DeliveryID: "d-1"})
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusSuccess})
	mustCreateBuild(t, s, "acme", "app-2", pipeline.Build{Status: pipeline.StatusRunning, DeliveryID: "d-2"})
	for _, repo := range []string{"app", "app-2"} {
		if err := s.PutSecret(t.Context(), "acme", repo, pipeline.SecretSet{Name: "creds", Data: map[string]string{"K": "v"}}); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.DeletePipeline(t.Context(), "ACME", "App"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.DeletePipeline(t.Context(), "acme", "app"), pipeline.ErrNotFound)

	for key := range rawValues(t, cli, prefixOf(t)) {
		if strings.Contains(key, "/acme/app/") || strings.HasSuffix(key, "/acme/app") {
			if !strings.Contains(key, "/counters/") {
				t.Errorf("key %s survived DeletePipeline", key)
			}
		}
	}
	if _, err := s.GetBuild(t.Context(), "acme", "app-2", 1); err != nil {
		t.Errorf("neighbour's build: %v", err)
	}
	if _, err := s.GetSecret(t.Context(), "acme", "app-2", "creds"); err != nil {
		t.Errorf("neighbour's secret: %v", err)
	}
	active, err := s.ActiveBuilds(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].Repo != "app-2" {
		t.Errorf("ActiveBuilds after delete = %+v, want only app-2's build", active)
	}

	// Created again: a new pipeline whose numbering continues.
	p := mustCreatePipeline(t, s, "acme", "app")
	if p.Secrets == nil || len(p.Secrets) != 0 {
		t.Errorf("re-created pipeline Secrets = %v, want empty", p.Secrets)
	}
	b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{DeliveryID: "d-1"})
	if b.Number != 3 {
		t.Errorf("first build of the re-created pipeline is %d, want 3 (numbers are never reused)", b.Number)
	}
}

func TestPipelineKeysDoNotLeakIntoOtherPrefixes(t *testing.T) {
	cli := sharedClient(t)
	a := newStoreWith(t, cli, newOpts(prefixOf(t)+"a/"))
	b := newStoreWith(t, cli, newOpts(prefixOf(t)+"b/"))
	mustCreatePipeline(t, a, "acme", "app")
	if _, err := b.GetPipeline(t.Context(), "acme", "app"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("store with another prefix sees the pipeline: %v", err)
	}
	resp, err := cli.Get(t.Context(), prefixOf(t)+"a/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count == 0 {
		t.Errorf("nothing stored under the store's prefix: %v", err)
	}
}

// A pipeline recorded before pipelines named their forge (no "forge" in
// its record) was GitHub's, and reads so, through the cache or not.
func TestPipelineRecordedWithoutForgeReadsAsGitHub(t *testing.T) {
	const old = `{"id":"old-id","owner":"Acme","repo":"Old","events":["push"],"login":"wile",` +
		`"notif":null,"secrets":[],"vars":null,"owner_user_id":"github|1001","repo_id":42,` +
		`"clone_url":"https://github.example/Acme/Old.git","default_branch":"main","webhook_id":0,` +
		`"webhook_secret_sealed":"","deploy_key_id":0,"deploy_key_public":"",` +
		`"deploy_key_private_sealed":"","fork_secrets":false,"namespace":"","created":1}`
	for _, lin := range []bool{false, true} {
		t.Run(fmt.Sprintf("linearizable=%v", lin), func(t *testing.T) {
			cli := sharedClient(t)
			prefix := prefixOf(t)
			if _, err := cli.Put(t.Context(), prefix+"pipelines/acme/old", old); err != nil {
				t.Fatal(err)
			}
			s := newCachedWith(t, cli, etcdstore.Options{Prefix: prefix}, etcdstore.CacheOptions{LinearizableReads: lin})
			p, err := s.GetPipeline(t.Context(), "acme", "old")
			if err != nil {
				t.Fatal(err)
			}
			if p.Forge != "github" || p.ID != "old-id" || p.OwnerUserID != "github|1001" {
				t.Errorf("old pipeline read as forge %q (id %q, owner user %q), want github", p.Forge, p.ID, p.OwnerUserID)
			}
			list, err := s.ListPipelines(t.Context())
			if err != nil || len(list) != 1 || list[0].Forge != "github" {
				t.Errorf("listed old pipelines: %+v, %v; want one on github", list, err)
			}
			// An update writes the name down; a pipeline of another forge keeps its own.
			if _, err := s.UpdatePipeline(t.Context(), "acme", "old", func(p *pipeline.Pipeline) error { p.Login = "coyote"; return nil }); err != nil {
				t.Fatal(err)
			}
			if v := rawValues(t, cli, prefix)[prefix+"pipelines/acme/old"]; !strings.Contains(v, `"forge":"github"`) {
				t.Errorf("updated record %s does not name its forge", v)
			}
			bb := minimalPipeline("acme", "bb")
			bb.Forge = "bitbucket"
			if _, err := s.CreatePipeline(t.Context(), bb); err != nil {
				t.Fatal(err)
			}
			if got, err := s.GetPipeline(t.Context(), "acme", "bb"); err != nil || got.Forge != "bitbucket" {
				t.Errorf("bitbucket pipeline read as forge %q, %v", got.Forge, err)
			}
		})
	}
}
