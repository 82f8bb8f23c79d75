package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

var secret = []byte("0123456789abcdef0123456789abcdef-and-more")

const ghToken = "gho_jwtgen_test_token_value"

func newGitHub(t *testing.T) *fakegithub.Server {
	t.Helper()
	gh := fakegithub.New(t)
	gh.AddUser("octocat", 1001, ghToken)
	return gh
}

// verify checks tok with the server's verifier and returns the identity.
func verify(t *testing.T, tok string) auth.Identity {
	t.Helper()
	v, err := auth.NewVerifier(t.Context(), auth.VerifierConfig{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(t.Context(), strings.TrimSpace(tok))
	if err != nil {
		t.Fatalf("the server refuses the token: %v", err)
	}
	return id
}

func TestJWTGenPrintsATokenTheServerAcceptsWithTheGitHubToken(t *testing.T) {
	gh := newGitHub(t)
	env := map[string]string{"GITHUB_API_URL": gh.APIURL}
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"--secret", base64.RawURLEncoding.EncodeToString(secret), "--github-token", ghToken, "--ttl", "2h"},
		&out, &errOut, func(k string) string { return env[k] })
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("stdout is not one line: %q", out.String())
	}
	id := verify(t, out.String())
	if id.UserID != "github|1001" || id.Login != "octocat" || id.GitHubToken != ghToken || id.TokenID == "" {
		t.Errorf("identity = %v (GitHub token carried: %v, jti %q)", id, id.GitHubToken == ghToken, id.TokenID)
	}
	if d := time.Until(id.Expires); d < 119*time.Minute || d > 2*time.Hour {
		t.Errorf("expires in %s, want 2h", d)
	}
	var looked bool
	for _, r := range gh.Requests() {
		if r.Path == "/api/v3/user" && r.User == "octocat" {
			looked = true
		}
	}
	if !looked {
		t.Errorf("the user was not looked up at GITHUB_API_URL")
	}
}

func TestJWTGenFailsClearlyWithoutLeakingTheToken(t *testing.T) {
	gh := newGitHub(t)
	good := base64.StdEncoding.EncodeToString(secret)
	tests := []struct {
		name  string
		args  []string
		setup func()
		code  int
		says  string
	}{
		{"short secret", []string{"--secret", base64.StdEncoding.EncodeToString([]byte("short")), "--github-token", ghToken}, nil, 2, "at least 32"},
		{"no secret", []string{"--github-token", ghToken}, nil, 2, "empty"},
		{"no GitHub token", []string{"--secret", good}, nil, 2, "--github-token is required"},
		{"negative ttl", []string{"--secret", good, "--github-token", ghToken, "--ttl", "-1h"}, nil, 2, "--ttl"},
		{"unknown GitHub token", []string{"--secret", good, "--github-token", "gho_unknown_token_value"}, nil, 1, "401"},
		{"GitHub down", []string{"--secret", good, "--github-token", ghToken}, func() { gh.SetDown(true) }, 1, "503"},
		{"bad API URL", []string{"--secret", good, "--github-token", ghToken, "--github-api-url", "ftp://x"}, nil, 1, "not an absolute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
				t.Cleanup(func() { gh.SetDown(false) })
			}
			var out, errOut bytes.Buffer
			code := run(t.Context(), tc.args, &out, &errOut, func(k string) string {
				if k == "GITHUB_API_URL" {
					return gh.APIURL
				}
				return ""
			})
			if code != tc.code || out.Len() != 0 {
				t.Fatalf("exit %d, stdout %q; want exit %d and nothing on stdout (stderr %s)", code, out.String(), tc.code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.says) {
				t.Errorf("stderr %q does not say %q", errOut.String(), tc.says)
			}
			for _, s := range []string{ghToken, "gho_unknown_token_value", good} {
				if strings.Contains(errOut.String(), s) {
					t.Errorf("stderr reveals a secret: %q", errOut.String())
				}
			}
		})
	}
}

// TestJWTGenScriptWorksFromAnotherDirectory runs scripts/jwt-gen as a user
// would, from outside the repository, with the settings in the environment.
func TestJWTGenScriptWorksFromAnotherDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command with go run")
	}
	gh := newGitHub(t)
	script, err := filepath.Abs("../jwt-gen")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), script, "--ttl", "1h")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GITHUB_API_URL="+gh.APIURL,
		"AUTH_SECRET="+base64.StdEncoding.EncodeToString(secret), "GITHUB_TOKEN="+ghToken)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, errOut.String())
	}
	if id := verify(t, out.String()); id.UserID != "github|1001" {
		t.Errorf("identity = %v", id)
	}
}

// TestJWTGenHelpShowsNoSecretFromTheEnvironment: --help (and a usage
// error) print the flags with their defaults; the secret and the GitHub
// token the environment holds must not be among them.
func TestJWTGenHelpShowsNoSecretFromTheEnvironment(t *testing.T) {
	envSecret := base64.StdEncoding.EncodeToString(secret)
	env := map[string]string{"AUTH_SECRET": envSecret, "GITHUB_TOKEN": ghToken, "GITHUB_API_URL": "http://127.0.0.1:1/"}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--frobnicate"}} {
		var out, errOut bytes.Buffer
		code := run(t.Context(), args, &out, &errOut, func(k string) string { return env[k] })
		if code != 2 || !strings.Contains(errOut.String(), "-secret") || !strings.Contains(errOut.String(), "$AUTH_SECRET") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
		for _, s := range []string{envSecret, ghToken, base64.RawURLEncoding.EncodeToString(secret)} {
			if strings.Contains(out.String()+errOut.String(), s) {
				t.Fatalf("%v prints a secret from the environment:\n%s", args, errOut.String())
			}
		}
	}
	// The environment still supplies both when the flags are absent.
	gh := newGitHub(t)
	env["GITHUB_API_URL"] = gh.APIURL
	var out, errOut bytes.Buffer
	if code := run(t.Context(), nil, &out, &errOut, func(k string) string { return env[k] }); code != 0 {
		t.Fatalf("from the environment: exit %d: %s", code, errOut.String())
	}
	verify(t, out.String())
}
