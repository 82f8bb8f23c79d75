package main

import (
	"os"
	"path"
	"strings"
	"testing"
)

// dockerIgnored reports whether rel (slash-separated, from the context
// root) is excluded by patterns, with the .dockerignore rules used here:
// a pattern excludes what it matches and everything under it; "**/" at
// the start matches any number of leading directories.
func dockerIgnored(patterns []string, rel string) bool {
	parts := strings.Split(rel, "/")
	for _, p := range patterns {
		p = strings.TrimPrefix(p, "/")
		anyDepth := strings.HasPrefix(p, "**/")
		p = strings.TrimPrefix(p, "**/")
		for start := 0; start < len(parts); start++ {
			if start > 0 && !anyDepth {
				break
			}
			for end := start + 1; end <= len(parts); end++ {
				if ok, _ := path.Match(p, strings.Join(parts[start:end], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

func TestDockerignoreKeepsSecretsOutOfTheBuildContext(t *testing.T) {
	data, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") {
				t.Fatalf("negated pattern %q: this test's matcher does not handle them", l)
			}
			patterns = append(patterns, l)
		}
	}
	for _, p := range []string{"kontinuous-data/auth-secret", "kontinuous-data/etcd/member/snap/db", ".git/config", "sub/kontinuous-data/auth-secret", "kontinuous"} {
		if !dockerIgnored(patterns, p) {
			t.Errorf("%s is sent to the Docker build context", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/kontinuous/main.go", "api/openapi.go", "swagger-ui/index.html", "scripts/kube-testenv/testenv/stages.yaml", "cmd/kontinuous-bench/main.go"} {
		if dockerIgnored(patterns, p) {
			t.Errorf("%s, needed by the build, is excluded", p)
		}
	}
}
