// Command demo is Kontinuous's offline quick start: it starts the
// stand-in GitHub of the tests (pipeline/pipelinetest/fakegithub) with a
// sample repository, builds and starts the server pointed at it, creates
// the pipeline, pushes a commit (a signed webhook, as GitHub sends it) and
// waits for the build; then it prints the URL to open, who you are and a
// ready token with curl lines, and keeps both running until Ctrl-C.
//
//	go run ./scripts/demo [--listen 127.0.0.1:3005] [--once]
//
// No GitHub account or network is needed, only Go and git. It is a
// separate program: nothing of it is in the server binary.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// The demo's user and repository on the stand-in GitHub.
const (
	demoLogin  = "newcomer"
	demoUserID = 4242
	demoToken  = "gho_demo_token_of_newcomer"
	demoOwner  = "demo"
	demoRepo   = "hello"
)

// samplePipeline is the .pipeline.yml of the sample repository.
const samplePipeline = `apiVersion: v1alpha1
kind: Pipeline
metadata:
  name: hello
spec:
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      name: hello
    vars:
      GREETING: Hello from Kontinuous
    stages:
      - name: Test
        type: command
        params:
          command: ["sh", "-c", "echo \"$GREETING on $KONTINUOUS_BRANCH at $KONTINUOUS_COMMIT\"; cat hello.txt; ls -l"]
      - name: Package
        type: command
        params:
          command: ["sh", "-c", "mkdir -p dist && cp hello.txt dist/ && echo packaged dist/hello.txt"]
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// defaultListen is the demo server's address unless taken or set.
const defaultListen = "127.0.0.1:3005"

// free reports whether addr can be listened on now.
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	_ = l.Close() // only probing
	return true
}

// run is the demo; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", defaultListen, "where the server listens (127.0.0.1:0 picks a free port; by default a free one when 3005 is taken)")
	once := fs.Bool("once", false, "exit after the first build instead of running until Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "listen" })
	if !set && !free(*listen) {
		// A Kontinuous started with the README's first command already
		// has 3005: the demo's own server takes a free port instead.
		fmt.Fprintf(stderr, "demo: %s is taken (a Kontinuous already running?); the demo's server takes a free port\n", *listen)
		*listen = "127.0.0.1:0"
	}
	tb := newRunner(stderr)
	defer tb.cleanup()
	code := func() (code int) {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatal); !ok {
					panic(r)
				}
				code = 1
			}
		}()
		return demo(ctx, tb, *listen, *once, stdout, stderr)
	}()
	return code
}

func demo(ctx context.Context, tb *runner, listen string, once bool, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "demo: starting the stand-in GitHub and building the server (the first build takes a minute)...")
	gh := fakegithub.New(tb)
	gh.AddUser(demoLogin, demoUserID, demoToken)
	gh.AddRepo(demoOwner, demoRepo)
	gh.Grant(demoLogin, demoOwner, demoRepo, "admin")
	gh.SetPublic(demoOwner, demoRepo, true)
	repo := gh.Repo(demoOwner, demoRepo)
	repo.Commit("main", map[string]string{"README.md": "# hello\n", "hello.txt": "hello, world\n"}, "Initial commit")

	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // crypto/rand.Read does not fail
	bin, err := buildServer(ctx, tb.TempDir())
	if err != nil {
		fmt.Fprintln(stderr, "demo: "+err.Error())
		return 1
	}
	// The secret goes through the environment: a command line is visible
	// to every local user (ps).
	srv, err := startServer(ctx, bin, stderr, []string{"AUTH_SECRET=" + base64.RawURLEncoding.EncodeToString(secret)},
		"--listen", listen, "--data-dir", filepath.Join(tb.TempDir(), "data"),
		"--github-api-url", gh.APIURL, "--github-url", gh.URL)
	if err != nil {
		fmt.Fprintln(stderr, "demo: "+err.Error())
		return 1
	}
	defer srv.stop()
	tok, err := mint(secret)
	if err != nil {
		fmt.Fprintln(stderr, "demo: "+err.Error())
		return 1
	}
	c := &client{base: srv.url, token: tok}
	if err := c.call("POST", "/api/v1/pipelines", map[string]any{"owner": demoOwner, "repo": demoRepo, "events": []string{"push", "pull_request"}}, http.StatusCreated, nil); err != nil {
		fmt.Fprintln(stderr, "demo: create the pipeline: "+err.Error())
		return 1
	}
	// A push, as GitHub delivers it to the webhook the pipeline installed.
	before := repo.Head("main")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": samplePipeline}, "Add .pipeline.yml")
	hooks := gh.Hooks(demoOwner, demoRepo)
	if len(hooks) != 1 {
		fmt.Fprintf(stderr, "demo: %d webhooks installed, want 1\n", len(hooks))
		return 1
	}
	payload := fakegithub.PushPayload(repo, "main", before, sha, demoLogin)
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.url+"/api/v1/pipelines/demo/hello/builds", bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "demo-1")
	req.Header.Set("X-Hub-Signature-256", fakegithub.SignPayload(hooks[0].Secret, payload))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "demo: push: "+err.Error())
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		fmt.Fprintf(stderr, "demo: push webhook answered %d\n", resp.StatusCode)
		return 1
	}
	fmt.Fprintln(stderr, "demo: pipeline created, commit pushed; waiting for build 1...")
	var b pipeline.Build
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if err := c.call("GET", "/api/v1/pipelines/demo/hello/builds/1", nil, http.StatusOK, &b); err == nil && b.Status.Done() {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			fmt.Fprintf(stderr, "demo: build 1 did not end (last status %s)\n", b.Status)
			return 1
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "Build 1 of %s/%s: %s\n", demoOwner, demoRepo, b.Status)
	for _, st := range b.Stages {
		fmt.Fprintf(stdout, "  stage %d %-8s %s\n", st.Index, st.Name, st.Status)
	}
	if log, err := c.text("/api/v1/pipelines/demo/hello/builds/1/stages/1/logs?format=text"); err == nil {
		fmt.Fprintln(stdout, "Log of stage 1:")
		for _, l := range strings.Split(strings.TrimRight(log, "\n"), "\n") {
			fmt.Fprintln(stdout, "  | "+l)
		}
	}
	fmt.Fprintf(stdout, `
Kontinuous is running at %[1]s (API docs: %[1]s/apidocs/)
You are %[2]s (GitHub user id %[3]d) on a stand-in GitHub at %[4]s,
admin of the public repository %[5]s/%[6]s.

Your token (paste it into Authorize in /apidocs):
  export TOKEN=%[7]s

Try:
  curl -s -H "Authorization: Bearer $TOKEN" %[1]s/api/v1/pipelines/demo/hello/builds
  curl -s -H "Authorization: Bearer $TOKEN" '%[1]s/api/v1/pipelines/demo/hello/builds/1/stages/1/logs?format=text'
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'X-Custom-Event: cli' -H 'Content-Type: application/json' \
       -d '{"author":"%[2]s","branch":"main"}' %[1]s/api/v1/pipelines/demo/hello/builds
  curl -s %[1]s/api/v1/pipelines/demo/hello/badge.svg
  go run ./cmd/kontinuous lint .pipeline.yml
`, srv.url, demoLogin, demoUserID, gh.URL, demoOwner, demoRepo, tok)
	if b.Status != pipeline.StatusSuccess {
		fmt.Fprintf(stderr, "demo: build 1 ended %s: %s\n", b.Status, b.Message)
		return 1
	}
	if once {
		return 0
	}
	fmt.Fprintln(stdout, "\nPress Ctrl-C to stop the server and the stand-in GitHub (everything is deleted).")
	select {
	case <-ctx.Done():
	case <-srv.exited:
		fmt.Fprintln(stderr, "demo: the server exited")
		return 1
	}
	return 0
}

// mint signs a token for the demo user as scripts/jwt-gen does.
func mint(secret []byte) (string, error) {
	now := time.Now()
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	claims := jwt.MapClaims{
		"iss": "kontinuous", "sub": fmt.Sprintf("github|%d", demoUserID), "user_id": fmt.Sprintf("github|%d", demoUserID),
		"name": demoLogin, "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
		"jti":        base64.RawURLEncoding.EncodeToString(jti[:]),
		"identities": []map[string]any{{"provider": "github", "connection": "github", "isSocial": true, "user_id": demoUserID, "access_token": demoToken}},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

// buildServer builds ./cmd/kontinuous of this module into dir.
func buildServer(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the demo from the Kontinuous module: go run ./scripts/demo")
	}
	bin := filepath.Join(dir, "kontinuous")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kontinuous")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kontinuous: %v\n%s", err, out)
	}
	return bin, nil
}

// server is the running server process.
type server struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
}

func startServer(ctx context.Context, bin string, stderr io.Writer, env []string, args ...string) (*server, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, exited: make(chan struct{})}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent && strings.Contains(line, "kontinuous serving") {
				for _, f := range strings.Fields(line) {
					if u, ok := strings.CutPrefix(f, "url="); ok {
						urls <- u
						sent = true
					}
				}
				continue
			}
			if !strings.Contains(line, "level=INFO") {
				fmt.Fprintln(stderr, "server: "+line)
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(s.exited) }()
	select {
	case s.url = <-urls:
		return s, nil
	case <-s.exited:
		return nil, errors.New("the server did not start (see its message above; is the port taken? try --listen 127.0.0.1:0)")
	case <-time.After(2 * time.Minute):
		s.stop()
		return nil, errors.New("the server did not start within 2 minutes")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// stop ends the server gracefully (SIGTERM), then for good.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// client calls the API with the demo user's token.
type client struct {
	base, token string
}

func (c *client) call(method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (c *client) text(path string) (string, error) {
	req, _ := http.NewRequest("GET", c.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return string(data), err
}

// fatal is the panic value of runner.Fatal*.
type fatal struct{}

// runner lets the stand-in GitHub, written for tests, run in a program:
// it is the testing.TB it needs (a failure ends the demo).
type runner struct {
	testing.TB // nil: only the methods below are used
	stderr     io.Writer
	dirs       []string
	cleanups   []func()
}

func newRunner(stderr io.Writer) *runner { return &runner{stderr: stderr} }

func (r *runner) Helper() {}
func (r *runner) Fatalf(format string, a ...any) {
	fmt.Fprintf(r.stderr, "demo: "+format+"\n", a...)
	panic(fatal{})
}
func (r *runner) Fatal(a ...any) {
	fmt.Fprintln(r.stderr, append([]any{"demo:"}, a...)...)
	panic(fatal{})
}
func (r *runner) Errorf(format string, a ...any) { fmt.Fprintf(r.stderr, "demo: "+format+"\n", a...) }
func (r *runner) Logf(format string, a ...any)   {}
func (r *runner) Log(a ...any)                   {}
func (r *runner) Cleanup(f func())               { r.cleanups = append(r.cleanups, f) }
func (r *runner) Context() context.Context       { return context.Background() }
func (r *runner) TempDir() string {
	d, err := os.MkdirTemp("", "kontinuous-demo-")
	if err != nil {
		r.Fatalf("%v", err)
	}
	r.dirs = append(r.dirs, d)
	return d
}

func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	for _, d := range r.dirs {
		_ = os.RemoveAll(d) // best effort
	}
}
