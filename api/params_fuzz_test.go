package api

import (
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/github"
)

// FuzzPathParams: the validators of path parameters never panic, refuse
// with ErrInvalid, and what they accept is safe to use in etcd keys and
// file paths (the forge-neutral rule) and, for GitHub's validator, within
// GitHub's name rules. Seeds: testdata/fuzz/FuzzPathParams.
func FuzzPathParams(f *testing.F) {
	f.Add("acme", "app", "main", "1")
	f.Add("ACME-corp", "my.repo_x-1", "feature/x.y", "999999999")
	// "." and ".." with a valid owner, so that the repository check is
	// the one that must refuse them.
	f.Add("acme", "..", "../etc", "0")
	f.Add("acme", ".", "a..b", "1")
	f.Add("-acme", "..", "../etc", "0")
	f.Add("a/b", "r\x00", "-rf", "01")
	f.Add("", ".", "refs//heads", "+1")
	f.Add(strings.Repeat("a", 40), strings.Repeat("r", 101), strings.Repeat("r", 256), "99999999999999999999")
	f.Add("acmé", "app ", "main\n", "1e3")
	f.Fuzz(func(t *testing.T, owner, repo, ref, build string) {
		if err := pipeline.ValidateRepoName(owner, repo); err != nil {
			if !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("ValidateRepoName(%q, %q): %v is not ErrInvalid", owner, repo, err)
			}
		} else if !neutralName(owner) || !neutralName(repo) {
			t.Fatalf("forge-neutral rule accepted %q/%q", owner, repo)
		}
		if err := github.ValidateRepoName(owner, repo); err != nil {
			if !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("github.ValidateRepoName(%q, %q): %v is not ErrInvalid", owner, repo, err)
			}
		} else {
			if !gitHubOwner(owner) {
				t.Fatalf("GitHub rule accepted owner %q", owner)
			}
			if !gitHubRepo(repo) {
				t.Fatalf("GitHub rule accepted repo %q", repo)
			}
		}
		if err := pipeline.ValidateRef("ref", ref); err != nil {
			if !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("ValidateRef(%q): %v is not ErrInvalid", ref, err)
			}
		} else if !safeRef(ref) {
			t.Fatalf("accepted ref %q", ref)
		}
		req := restful.NewRequest(httptest.NewRequest("GET", "/", nil))
		req.PathParameters()[pBuild] = build
		n, err := positive(req, pBuild)
		if err != nil {
			if !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("positive(%q): %v is not ErrInvalid", build, err)
			}
			return
		}
		if n < 1 || strconv.Itoa(n) != build {
			t.Fatalf("positive(%q) = %d: not the canonical positive decimal it was given", build, n)
		}
	})
}

// neutralName: 1–100 ASCII letters, digits, '.', '_' or '-', not starting
// with '-', not "." or "..": one path segment and one etcd key segment.
func neutralName(s string) bool {
	return gitHubRepo(s) && s[0] != '-'
}

// gitHubOwner: 1–39 ASCII letters, digits or '-', not starting with '-'.
func gitHubOwner(s string) bool {
	if len(s) < 1 || len(s) > 39 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// gitHubRepo: 1–100 ASCII letters, digits, '.', '_' or '-', not "." or "..".
func gitHubRepo(s string) bool {
	if len(s) < 1 || len(s) > 100 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// safeRef: printable ASCII of git's safe set, no "..", no leading '/' or
// '-', no trailing '/', at most 255 bytes.
func safeRef(s string) bool {
	if len(s) < 1 || len(s) > 255 || !utf8.ValidString(s) || strings.Contains(s, "..") ||
		s[0] == '/' || s[0] == '-' || s[len(s)-1] == '/' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && !strings.ContainsRune("._/-", rune(c)) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
