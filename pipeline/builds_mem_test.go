package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/executor/local"
)

// seedBuilds stores acme/app's builds as runners would have left them:
// #1 SUCCESS (stages one, two; stage one has a log), #2 RUNNING with no
// runner, #3 WAITING at its wait stage 2, #4 FAIL at stage one.
func (w *memWorld) seedBuilds() {
	w.t.Helper()
	ctx := w.t.Context()
	sha := w.repo.Head("main")
	cmd := func(name string, i int, st pipeline.Status) pipeline.Stage {
		return pipeline.Stage{ID: fmt.Sprintf("s-%d", i), Name: name, Type: "command", Index: i, Status: st,
			Params: map[string]any{"command": []any{"true"}}}
	}
	now := pipeline.Now()
	seed := []func(*pipeline.Build){
		func(b *pipeline.Build) {
			b.Status, b.Started, b.Finished = pipeline.StatusSuccess, now, now
			b.Stages = []pipeline.Stage{cmd("one", 1, pipeline.StatusSuccess), cmd("two", 2, pipeline.StatusSuccess)}
		},
		func(b *pipeline.Build) {
			b.Status, b.Started = pipeline.StatusRunning, now
			b.Stages = []pipeline.Stage{cmd("one", 1, pipeline.StatusRunning), cmd("two", 2, pipeline.StatusPending)}
		},
		func(b *pipeline.Build) {
			b.Status, b.Started = pipeline.StatusWaiting, now
			b.Stages = []pipeline.Stage{cmd("one", 1, pipeline.StatusSuccess),
				{ID: "s-2", Name: "approve", Type: "wait", Index: 2, Status: pipeline.StatusWaiting}, cmd("three", 3, pipeline.StatusPending)}
			b.CurrentStage = 1
		},
		func(b *pipeline.Build) {
			b.Status, b.Started, b.Finished, b.Message = pipeline.StatusFail, now, now, `stage 1 "one" failed: no`
			b.Stages = []pipeline.Stage{cmd("one", 1, pipeline.StatusFail), cmd("two", 2, pipeline.StatusSkipped)}
		},
	}
	for _, mod := range seed {
		b, err := w.store.CreateBuild(ctx, "acme", "app", pipeline.Build{Event: "push", Branch: "main", Commit: sha, Author: "alice",
			Status: pipeline.StatusPending, Created: now, CloneURL: w.repo.CloneURL, Stages: []pipeline.Stage{}})
		if err != nil {
			w.t.Fatal(err)
		}
		if _, err := w.store.UpdateBuild(ctx, "acme", "app", b.Number, func(b *pipeline.Build) error { mod(b); return nil }); err != nil {
			w.t.Fatal(err)
		}
	}
	lw, err := w.logs.Create(ctx, pipeline.LogRef{Pipeline: "acme/app", Build: 1, Stage: 1})
	if err != nil {
		w.t.Fatal(err)
	}
	fmt.Fprintln(lw, "hello from stage one")
	if err := lw.Close(); err != nil {
		w.t.Fatal(err)
	}
}

// buildState shows what a test checks of a build: its status, current
// stage, message and stages.
func buildState(b pipeline.Build) string {
	return fmt.Sprintf("%s @%d %q [%s]", b.Status, b.CurrentStage, b.Message, stageStates(b))
}

func TestBuildReadsNeedReadAccess(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	w.seedBuilds()
	for _, tc := range []struct {
		caller string
		want   error
	}{{"alice", nil}, {"dave", nil}, {"bob", pipeline.ErrNotFound}, {"eve", pipeline.ErrUnauthorized}} {
		t.Run(tc.caller, func(t *testing.T) {
			ctx, c := t.Context(), memCallers[tc.caller]
			list, err := w.svc.ListBuilds(ctx, c, "acme", "app", 2, 0)
			wantErr(t, "list", err, tc.want)
			var numbers []int
			for _, b := range list {
				numbers = append(numbers, b.Number)
			}
			if got := fmt.Sprint(numbers); tc.want == nil && got != "[4 3]" || tc.want != nil && len(list) != 0 {
				t.Fatalf("listed %s", got)
			}
			if tc.want == nil {
				if older, err := w.svc.ListBuilds(ctx, c, "acme", "app", 0, 3); err != nil || len(older) != 2 || older[0].Number != 2 || older[1].Number != 1 {
					t.Fatalf("builds before 3: %+v %v", older, err)
				}
			}
			b, err := w.svc.GetBuild(ctx, c, "acme", "app", 3)
			wantErr(t, "get", err, tc.want)
			if tc.want == nil && buildState(b) != `WAITING @1 "" [one:SUCCESS: | approve:WAITING: | three:PENDING:]` {
				t.Fatalf("build 3: %s", buildState(b))
			}
			st, err := w.svc.GetStage(ctx, c, "acme", "app", 3, 2)
			wantErr(t, "stage", err, tc.want)
			if tc.want == nil && (st.Name != "approve" || st.Type != "wait") {
				t.Fatalf("stage 3/2: %+v", st)
			}
			st, data, err := w.svc.StageLog(ctx, c, "acme", "app", 1, 1)
			wantErr(t, "log", err, tc.want)
			if tc.want == nil && (st.Name != "one" || string(data) != "hello from stage one\n") {
				t.Fatalf("log 1/1: %+v %q", st, data)
			}
			if tc.want != nil && len(data) != 0 {
				t.Fatalf("a refused reader got the log %q", data)
			}
			if tc.want != nil {
				return
			}
			// A stage that wrote no log has an empty one; a stage or build
			// that does not exist is not found.
			if _, data, err := w.svc.StageLog(ctx, c, "acme", "app", 1, 2); err != nil || data != nil {
				t.Fatalf("log of a stage without one: %q %v", data, err)
			}
			_, err = w.svc.GetStage(ctx, c, "acme", "app", 1, 9)
			wantErr(t, "missing stage", err, pipeline.ErrNotFound)
			_, err = w.svc.GetBuild(ctx, c, "acme", "app", 99)
			wantErr(t, "missing build", err, pipeline.ErrNotFound)
			_, err = w.svc.ListBuilds(ctx, c, "acme", "nope", 0, 0)
			wantErr(t, "builds of a missing pipeline", err, pipeline.ErrNotFound)
		})
	}
}

// The build actions, in order on the seeded builds (the engine is not
// started: each action's own effect is what is stored): each needs push
// (delete: admin) and refuses what the build's state does not allow.
func TestBuildActionsCheckPermissionAndTheBuildsState(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	w.seedBuilds()
	svc := w.svc
	cancel := func(n int) func(context.Context, pipeline.Caller) (pipeline.Build, error) {
		return func(ctx context.Context, c pipeline.Caller) (pipeline.Build, error) {
			return svc.CancelBuild(ctx, c, "acme", "app", n)
		}
	}
	approve := func(n, i int) func(context.Context, pipeline.Caller) (pipeline.Build, error) {
		return func(ctx context.Context, c pipeline.Caller) (pipeline.Build, error) {
			return svc.ContinueStage(ctx, c, "acme", "app", n, i)
		}
	}
	runFrom := func(n, i int) func(context.Context, pipeline.Caller) (pipeline.Build, error) {
		return func(ctx context.Context, c pipeline.Caller) (pipeline.Build, error) {
			return svc.RunFromStage(ctx, c, "acme", "app", n, i)
		}
	}
	restart := func(n int) func(context.Context, pipeline.Caller) (pipeline.Build, error) {
		return func(ctx context.Context, c pipeline.Caller) (pipeline.Build, error) {
			return svc.RestartBuild(ctx, c, "acme", "app", n)
		}
	}
	del := func(n int) func(context.Context, pipeline.Caller) (pipeline.Build, error) {
		return func(ctx context.Context, c pipeline.Caller) (pipeline.Build, error) {
			return pipeline.Build{}, svc.DeleteBuild(ctx, c, "acme", "app", n)
		}
	}
	steps := []struct {
		name   string
		caller string
		do     func(context.Context, pipeline.Caller) (pipeline.Build, error)
		want   error
		// number and buildState of the answer, when want is nil
		number int
		state  string
	}{
		{name: "cancel without access", caller: "bob", do: cancel(2), want: pipeline.ErrNotFound},
		{name: "cancel with read access", caller: "dave", do: cancel(2), want: pipeline.ErrForbidden},
		{name: "cancel without a forge token", caller: "eve", do: cancel(2), want: pipeline.ErrUnauthorized},
		{name: "cancel a finished build", caller: "carol", do: cancel(1), want: pipeline.ErrConflict},
		{name: "cancel a missing build", caller: "carol", do: cancel(99), want: pipeline.ErrNotFound},
		{name: "cancel a build no runner drives", caller: "carol", do: cancel(2),
			number: 2, state: `CANCELED @0 "" [one:CANCELED:build canceled | two:SKIPPED:skipped: the build was canceled]`},
		{name: "cancel it again", caller: "carol", do: cancel(2), want: pipeline.ErrConflict},
		{name: "approve with read access", caller: "dave", do: approve(3, 2), want: pipeline.ErrForbidden},
		{name: "approve a stage that does not wait", caller: "carol", do: approve(3, 1), want: pipeline.ErrConflict},
		{name: "approve a missing stage", caller: "carol", do: approve(3, 9), want: pipeline.ErrNotFound},
		{name: "approve a finished build", caller: "carol", do: approve(1, 1), want: pipeline.ErrConflict},
		{name: "approve", caller: "carol", do: approve(3, 2),
			number: 3, state: `RUNNING @2 "" [one:SUCCESS: | approve:SUCCESS: | three:PENDING:]`},
		{name: "approve again", caller: "carol", do: approve(3, 2), want: pipeline.ErrConflict},
		{name: "run from with read access", caller: "dave", do: runFrom(1, 2), want: pipeline.ErrForbidden},
		{name: "run from in a running build", caller: "carol", do: runFrom(3, 1), want: pipeline.ErrConflict},
		{name: "run from after a failed stage", caller: "carol", do: runFrom(4, 2), want: pipeline.ErrConflict},
		{name: "run from a missing stage", caller: "carol", do: runFrom(1, 9), want: pipeline.ErrNotFound},
		{name: "run from", caller: "carol", do: runFrom(1, 2),
			number: 1, state: `PENDING @1 "" [one:SUCCESS: | two:PENDING:]`},
		{name: "run a failed build again from its failed stage", caller: "carol", do: runFrom(4, 1),
			number: 4, state: `PENDING @0 "" [one:PENDING: | two:PENDING:]`},
		{name: "restart with read access", caller: "dave", do: restart(2), want: pipeline.ErrForbidden},
		{name: "restart a missing build", caller: "carol", do: restart(99), want: pipeline.ErrNotFound},
		{name: "restart", caller: "carol", do: restart(2), number: 5, state: `PENDING @0 "" []`},
		{name: "delete with push access", caller: "carol", do: del(2), want: pipeline.ErrForbidden},
		{name: "delete a build that has not ended", caller: "alice", do: del(3), want: pipeline.ErrConflict},
		{name: "delete", caller: "alice", do: del(2)},
		{name: "delete it again", caller: "alice", do: del(2), want: pipeline.ErrNotFound},
	}
	for _, s := range steps {
		// Not t.Run: each step depends on the ones before.
		b, err := s.do(t.Context(), memCallers[s.caller])
		wantErr(t, s.name, err, s.want)
		if s.want != nil || s.number == 0 {
			continue
		}
		if b.Number != s.number || buildState(b) != s.state {
			t.Fatalf("%s: answered #%d %s\nwant #%d %s", s.name, b.Number, buildState(b), s.number, s.state)
		}
		stored, err := w.store.GetBuild(t.Context(), "acme", "app", s.number)
		if err != nil || buildState(stored) != s.state {
			t.Fatalf("%s: stored %s %v", s.name, buildState(stored), err)
		}
	}
	// The restart is a new build of the same commit, by the restarter.
	if b, err := w.store.GetBuild(t.Context(), "acme", "app", 5); err != nil || b.Commit != w.repo.Head("main") || b.Author != "carol" || b.Event != "push" || b.Branch != "main" {
		t.Fatalf("restarted build %+v %v", b, err)
	}
	if _, err := w.store.GetBuild(t.Context(), "acme", "app", 2); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("deleted build: %v", err)
	}
}

// memSpec is a .pipeline.yml with stages (YAML list items).
func memSpec(stages ...string) string {
	return specHead + "    stages:\n" + strings.Join(stages, "")
}

// shStage is a command stage running script with sh -c.
func shStage(name, script string) string {
	q, _ := json.Marshal(script) // a string always marshals; JSON is YAML
	return fmt.Sprintf("      - name: %s\n        type: command\n        params: {command: [\"sh\", \"-c\", %s]}\n", name, q)
}

// errSeen stops a log follow once the line looked for is seen.
var errSeen = errors.New("seen")

// TestEngineRunsBuildsEndToEndOnTheMemoryStore runs builds with the local
// executor (real processes, a real clone from the stand-in GitHub) on the
// in-memory store, triggered and steered through the Service.
func TestEngineRunsBuildsEndToEndOnTheMemoryStore(t *testing.T) {
	w := newMemWorld(t, local.New(local.Config{WorkDir: filepath.Join(t.TempDir(), "ws")}))
	w.create()
	carol := memCallers["carol"]
	flag := filepath.Join(t.TempDir(), "flag")
	pidFile := filepath.Join(t.TempDir(), "pid")
	done := func(b pipeline.Build) bool { return b.Status.Done() }
	const secretValue = "s3cr3t-value-xyz"
	if _, err := w.svc.PutSecret(t.Context(), memCallers["alice"], "acme", "app", "creds", map[string]string{"API_TOKEN": secretValue}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		// spec is the branch's .pipeline.yml ("" = none).
		spec string
		// steer acts on the build once it runs and returns the condition
		// of its end (nil: it ends by itself).
		steer func(t *testing.T, n int)
		want  string // buildState of the ended build; "%s" is the commit
		// parseError: the build's message is the spec parser's, after
		// "invalid .pipeline.yml: "; want shows it as "…".
		parseError bool
		logs       map[int]string
		// hidden must appear in no stage's log.
		hidden string
		// check, when set, checks more once the build ended.
		check func(t *testing.T)
	}{
		{
			name: "success",
			spec: memSpec(shStage("build", `test -f README.md && echo built > out.txt && echo build ran`), shStage("check", `cat out.txt`)),
			want: `SUCCESS @1 "" [build:SUCCESS: | check:SUCCESS:]`,
			logs: map[int]string{1: "build ran\n", 2: "built\n"},
		},
		{
			name: "secrets, vars and the build's values in the environment",
			spec: specHead + "    secrets: [creds]\n    vars: {GREETING: hello}\n    stages:\n" +
				shStage("env", `echo "greeting=$GREETING token=$API_TOKEN"; echo "on $KONTINUOUS_BRANCH"; test "$API_TOKEN" = `+secretValue),
			want:   `SUCCESS @0 "" [env:SUCCESS:]`,
			logs:   map[int]string{1: "greeting=hello token=" + pipeline.Mask + "\non case-1\n"}, // this case's branch
			hidden: secretValue,
		},
		{
			name: "secret set that does not exist",
			spec: memSpec("      - name: uses-missing\n        type: command\n        secrets: [nope]\n        params: {command: [\"true\"]}\n"),
			want: `FAIL @0 "stage 1 \"uses-missing\" failed: secret \"nope\" does not exist in this pipeline" [uses-missing:FAIL:secret "nope" does not exist in this pipeline]`,
		},
		{
			name: "failing command",
			spec: memSpec(shStage("build", `echo about to fail; exit 3`), shStage("after", `echo never`)),
			want: `FAIL @0 "stage 1 \"build\" failed: command exited with status 3" [build:FAIL:command exited with status 3 | after:SKIPPED:skipped: an earlier stage failed]`,
			logs: map[int]string{1: "about to fail\n"},
		},
		{
			name: "no spec",
			want: `FAIL @0 "no .pipeline.yml at commit %s" []`,
		},
		{
			name:       "invalid spec",
			spec:       "kind: [\n",
			parseError: true,
			want:       `FAIL @0 "invalid .pipeline.yml: …" []`,
		},
		{
			name: "wait for approval",
			spec: memSpec(shStage("test", `true`), "      - name: approve\n        type: wait\n        params: {message: \"ship it?\"}\n", shStage("ship", `echo shipped`)),
			steer: func(t *testing.T, n int) {
				b := w.waitFor(n, "waiting", func(b pipeline.Build) bool { return b.Status == pipeline.StatusWaiting || b.Status.Done() })
				if got := buildState(b); got != `WAITING @1 "" [test:SUCCESS: | approve:WAITING:ship it? | ship:PENDING:]` {
					t.Fatalf("waiting: %s", got)
				}
				if _, err := w.svc.ContinueStage(t.Context(), memCallers["dave"], "acme", "app", n, 2); !errors.Is(err, pipeline.ErrForbidden) {
					t.Fatalf("a reader approves: %v", err)
				}
				if _, err := w.svc.ContinueStage(t.Context(), carol, "acme", "app", n, 2); err != nil {
					t.Fatal(err)
				}
			},
			want: `SUCCESS @2 "" [test:SUCCESS: | approve:SUCCESS:ship it? | ship:SUCCESS:]`,
			logs: map[int]string{3: "shipped\n"},
		},
		{
			name: "cancel a running command",
			spec: memSpec(shStage("sleep", `echo $$ > `+pidFile+`; echo started; exec sleep 300`), shStage("after", `true`)),
			steer: func(t *testing.T, n int) {
				err := w.svc.FollowStageLog(t.Context(), carol, "acme", "app", n, 1, func(line []byte) error {
					if string(line) == "started" || string(line) == "started\n" {
						return errSeen
					}
					return nil
				})
				if !errors.Is(err, errSeen) {
					t.Fatalf("the stage never printed started: %v", err)
				}
				b, err := w.svc.CancelBuild(t.Context(), carol, "acme", "app", n)
				if err != nil {
					t.Fatal(err)
				}
				if b.Status != pipeline.StatusCanceled && !b.CancelRequested {
					t.Fatalf("cancel answered %s", buildState(b))
				}
			},
			want: `CANCELED @0 "" [sleep:CANCELED:build canceled | after:SKIPPED:skipped: the build was canceled]`,
			check: func(t *testing.T) {
				// The process goes: the executor kills and reaps it (when
				// the runner's heart was late, the cancel ends the build
				// before the runner has stopped the stage).
				raw, err := os.ReadFile(pidFile)
				if err != nil {
					t.Fatal(err)
				}
				var pid int
				if _, err := fmt.Sscan(string(raw), &pid); err != nil || pid <= 1 {
					t.Fatalf("pid %q: %v", raw, err)
				}
				deadline := time.Now().Add(patience)
				for err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH); err = syscall.Kill(pid, 0) {
					if time.Now().After(deadline) {
						t.Fatalf("the canceled stage's process %d is still there (kill 0: %v)", pid, err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			},
		},
		{
			name: "run again from the failed stage",
			spec: memSpec(shStage("first", `echo first`), shStage("needs-flag", `test -f `+flag+` && echo flag found`)),
			steer: func(t *testing.T, n int) {
				b := w.waitFor(n, "done", done)
				if got := buildState(b); got != `FAIL @1 "stage 2 \"needs-flag\" failed: command exited with status 1" [first:SUCCESS: | needs-flag:FAIL:command exited with status 1]` {
					t.Fatalf("first run: %s", got)
				}
				if err := os.WriteFile(flag, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if _, err := w.svc.RunFromStage(t.Context(), carol, "acme", "app", n, 2); err != nil {
					t.Fatal(err)
				}
			},
			want: `SUCCESS @1 "" [first:SUCCESS: | needs-flag:SUCCESS:]`,
			logs: map[int]string{2: "flag found\n"},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			branch := fmt.Sprintf("case-%d", i)
			files := map[string]string{"case.txt": tc.name}
			if tc.spec != "" {
				files[pipeline.SpecPath] = tc.spec
			}
			sha := w.repo.Commit(branch, files, tc.name)
			b, err := w.svc.TriggerBuild(t.Context(), carol, "acme", "app", pipeline.EventDashboard, pipeline.ManualTrigger{Branch: branch})
			if err != nil {
				t.Fatal(err)
			}
			if b.Commit != sha {
				t.Fatalf("build of %s, want %s", b.Commit, sha)
			}
			if tc.steer != nil {
				tc.steer(t, b.Number)
			}
			b = w.waitFor(b.Number, "done", func(b pipeline.Build) bool { return b.Status.Done() && b.Runner == "" })
			want := tc.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, sha)
			}
			if rest, ok := strings.CutPrefix(b.Message, "invalid .pipeline.yml: "); tc.parseError && ok && rest != "" {
				b.Message = "invalid .pipeline.yml: …"
			}
			if got := buildState(b); got != want || b.Finished == 0 {
				t.Fatalf("ended %s (finished %d)\n want %s", got, b.Finished, want)
			}
			for stage, want := range tc.logs {
				_, data, err := w.svc.StageLog(t.Context(), memCallers["dave"], "acme", "app", b.Number, stage)
				if err != nil || !strings.Contains(string(data), want) {
					t.Fatalf("log of stage %d: %v\n%s\nwant a line %q", stage, err, data, want)
				}
			}
			for _, st := range b.Stages {
				_, data, err := w.svc.StageLog(t.Context(), memCallers["dave"], "acme", "app", b.Number, st.Index)
				if err != nil || tc.hidden != "" && strings.Contains(string(data), tc.hidden) {
					t.Fatalf("log of stage %d: %v\n%s", st.Index, err, data)
				}
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

// A badge shows the latest build (of a branch) of a public repository's
// pipeline; a private repository, a missing pipeline and a bad name all
// answer alike (ok false), so that a badge reveals nothing.
func TestBadgeShowsTheLatestBuildOfPublicRepositoriesOnly(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	sha := w.repo.Head("main")
	for _, b := range []pipeline.Build{
		{Branch: "main", Status: pipeline.StatusSuccess},
		{Branch: "feature", Status: pipeline.StatusFail},
		{Branch: "main", Status: pipeline.StatusRunning},
	} {
		b.Event, b.Commit, b.Stages = "push", sha, []pipeline.Stage{}
		if _, err := w.store.CreateBuild(t.Context(), "acme", "app", b); err != nil {
			t.Fatal(err)
		}
	}
	private := pipeline.NewBadges(w.svc)
	if st, ok := private.Status(t.Context(), "acme", "app", ""); ok || st != "" {
		t.Fatalf("a private repository's badge: %q %v", st, ok)
	}
	w.gh.SetPublic("acme", "app", true)
	badges := pipeline.NewBadges(w.svc) // the first one believes "private" for a while
	for _, tc := range []struct {
		owner, repo, branch string
		want                pipeline.Status
		ok                  bool
	}{
		{"acme", "app", "", pipeline.StatusRunning, true},
		{"ACME", "App", "main", pipeline.StatusRunning, true},
		{"acme", "app", "feature", pipeline.StatusFail, true},
		{"acme", "app", "never-built", "", true},
		{"acme", "nope", "", "", false},
		{"acme", "a..b/c", "", "", false},
		{"acme", "app", strings.Repeat("b", 256), "", false},
	} {
		if st, ok := badges.Status(t.Context(), tc.owner, tc.repo, tc.branch); st != tc.want || ok != tc.ok {
			t.Errorf("badge of %s/%s branch %.20q: %q %v, want %q %v", tc.owner, tc.repo, tc.branch, st, ok, tc.want, tc.ok)
		}
	}
	// The owner's token is gone: the forge cannot be asked, nothing shows.
	if err := w.store.PutUser(t.Context(), pipeline.User{ID: "github|1001", Login: "alice"}); err != nil {
		t.Fatal(err)
	}
	if st, ok := pipeline.NewBadges(w.svc).Status(t.Context(), "acme", "app", ""); ok || st != "" {
		t.Fatalf("badge without the owner's token: %q %v", st, ok)
	}
}
