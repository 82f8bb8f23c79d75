package pipeline_test

import (
	"context"
	"encoding/base64"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// A request the API authorizes (Service.Authorize in its permission
// filter, then the route's method with the caller it returned) reads the
// stored pipeline once, also when the pipeline lives on a forge linked to
// the caller's session: the grant carries the pipeline the check read, and
// choosing the forge to act on takes it from there.
func TestAnAuthorizedRequestReadsThePipelineOnce(t *testing.T) {
	w := newLinkWorld(t)
	ctx := t.Context()
	w.repo.Commit("main", map[string]string{pipeline.SpecPath: "kind: Pipeline\n"}, "add spec")
	if _, err := w.svc.CreatePipeline(ctx, w.github, pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}, Forge: "bitbucket"}); err != nil {
		t.Fatal(err)
	}
	bbSession := pipeline.Caller{UserID: w.bbUser.ID, Login: "alice", Token: w.bbUser.Token}
	routes := []struct {
		name string
		need pipeline.Permission
		call func(*testing.T, context.Context, pipeline.Caller) error
	}{
		{"GET pipeline", pipeline.PermRead, func(t *testing.T, ctx context.Context, c pipeline.Caller) error {
			if _, err := w.svc.GetPipeline(ctx, c, "acme", "app"); err != nil {
				return err
			}
			_, err := w.svc.AccessOf(ctx, c, "acme", "app")
			return err
		}},
		{"GET definition", pipeline.PermRead, func(t *testing.T, ctx context.Context, c pipeline.Caller) error {
			d, err := w.svc.GetDefinition(ctx, c, "acme", "app", "")
			if err == nil {
				if got, _ := base64.StdEncoding.DecodeString(d.Content); string(got) != "kind: Pipeline\n" {
					t.Errorf("definition %q", got)
				}
			}
			return err
		}},
		{"GET builds", pipeline.PermRead, func(t *testing.T, ctx context.Context, c pipeline.Caller) error {
			_, err := w.svc.ListBuilds(ctx, c, "acme", "app", 0, 0)
			return err
		}},
		{"GET secrets", pipeline.PermAdmin, func(t *testing.T, ctx context.Context, c pipeline.Caller) error {
			_, err := w.svc.ListSecrets(ctx, c, "acme", "app")
			return err
		}},
	}
	for _, session := range []struct {
		name string
		c    pipeline.Caller
	}{{"linked GitHub session", w.github}, {"Bitbucket session", bbSession}} {
		for _, r := range routes {
			t.Run(session.name+"/"+r.name, func(t *testing.T) {
				before := w.store.pipelineReads.Load()
				c, err := w.svc.Authorize(ctx, session.c, "acme", "app", r.need)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.call(t, ctx, c); err != nil {
					t.Fatal(err)
				}
				if n := w.store.pipelineReads.Load() - before; n != 1 {
					t.Errorf("%d pipeline reads, want 1", n)
				}
			})
		}
	}
	// The last route deletes it, through the linked session.
	before := w.store.pipelineReads.Load()
	c, err := w.svc.Authorize(ctx, w.github, "acme", "app", pipeline.PermAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.svc.DeletePipeline(ctx, c, "acme", "app"); err != nil {
		t.Fatal(err)
	}
	if n := w.store.pipelineReads.Load() - before; n != 1 {
		t.Errorf("DELETE: %d pipeline reads, want 1", n)
	}
	if _, err := w.store.Store.GetPipeline(ctx, "acme", "app"); err == nil {
		t.Error("the pipeline is still stored")
	}
}
