package pipeline_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
	"github.com/kontinuous/kontinuous/pipeline/memstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// recNotifier records what the engine asks of its notifier and posts the
// statuses at once, in order.
type recNotifier struct {
	mu     sync.Mutex
	events []string
}

func (r *recNotifier) CommitStatus(base context.Context, build string, post func(context.Context) error) {
	err := post(base)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.events = append(r.events, "status error "+err.Error())
	}
}

func (r *recNotifier) Slack(_ context.Context, url string, m pipeline.SlackMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "slack "+url+" "+m.Channel+" "+m.Text)
	return nil
}

func (r *recNotifier) Wait(context.Context) error { return nil }

func (r *recNotifier) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, "\n")
}

// On the in-memory store (no etcd): a build's stages post pending then
// their end state through the notifier, in order, with the stage name as
// context, and the build's end sends the Slack message its spec asks for.
func TestEngineCallsTheNotifierAtEachTransitionOnTheMemoryStore(t *testing.T) {
	ctx := t.Context()
	store := memstore.New()
	gh := fakegithub.New(t)
	gh.AddUser("alice", 1001, "tok-alice")
	repo := gh.AddRepo("acme", "app")
	gh.Grant("alice", "acme", "app", "admin")
	scm, err := githubscm.New(githubscm.Config{APIURL: gh.APIURL})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := logstore.New(filepath.Join(t.TempDir(), "logs"), logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutUser(ctx, pipeline.User{ID: "github|1001", Login: "alice", Token: pipeline.ForgeToken{AccessToken: "tok-alice"}}); err != nil {
		t.Fatal(err)
	}
	p, err := store.CreatePipeline(ctx, pipeline.Pipeline{Owner: "acme", Repo: "app", Events: []string{"push"}, Login: "alice",
		OwnerUserID: "github|1001", RepoID: repo.ID, CloneURL: repo.CloneURL, DefaultBranch: "main", WebhookSecret: "hooksecret-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutSecret(ctx, "acme", "app", pipeline.SecretSet{Name: "slack", Data: map[string]string{"slackurl": "https://hooks.example/x", "slackchannel": "#ci"}}); err != nil {
		t.Fatal(err)
	}
	sha := repo.Commit("main", map[string]string{".pipeline.yml": specHead + `    notif:
      - type: slack
        secrets: [slack]
    stages:
      - name: one
        type: command
        params: {command: ["true"]}
      - name: two
        type: command
        params: {command: ["true"]}
`}, "spec")
	rec := &recNotifier{}
	e := pipeline.NewEngine(pipeline.EngineConfig{Store: store, SCM: scm, Logs: logs, Executor: newRecExec("kubernetes", false),
		PublicURL: "http://kontinuous.test", StaleAfter: 3 * time.Second, Notifier: rec})
	e.Start(context.Background())
	b, err := e.Trigger(ctx, p, pipeline.Build{Event: pipeline.EventPush, Branch: "main", Commit: sha})
	if err != nil {
		t.Fatal(err)
	}
	want := "slack https://hooks.example/x #ci Build " + "1 of acme/app (main, " + sha[:12] + ") ended: SUCCESS"
	deadline := time.Now().Add(patience)
	for !strings.Contains(rec.got(), "slack") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop(t, e)
	if got := rec.got(); got != want {
		t.Fatalf("notifier calls:\n%s\nwant:\n%s", got, want)
	}
	var states []string
	for _, s := range gh.Statuses("acme", "app", sha) {
		states = append(states, s.Context+":"+s.State+":"+s.Description)
	}
	if got := strings.Join(states, " "); !strings.Contains(got, "one:pending:running") || !strings.Contains(got, "one:success") || !strings.Contains(got, "two:pending:running") || !strings.Contains(got, "two:success") {
		t.Fatalf("statuses %s (build %d)", got, b.Number)
	}
}
