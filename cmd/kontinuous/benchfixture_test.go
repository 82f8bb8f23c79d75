//go:build benchfixture

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// fixtureFor keeps TestServeBenchFixture's server up for external load
// tools (kontinuous-bench, wrk); zero skips it.
var fixtureFor = flag.Duration("fixture-for", 5*time.Minute, "serve the benchmark fixture this long for external load tools (see docs/performance.md)")

// TestServeBenchFixture is a tool, not a test (hence the build tag: the
// suite never sees it): it serves the read fixture (100 builds) and a
// webhook-ready pipeline for external load tools, printing what they
// need, for -fixture-for (default 5 minutes, at most 30). Run it with
//
//	go test -tags benchfixture -run TestServeBenchFixture -fixture-for=5m .
func TestServeBenchFixture(t *testing.T) {
	if *fixtureFor <= 0 {
		t.Fatal("-fixture-for must be positive")
	}
	f, gh := newReadFixtureTB(t)
	repo := gh.Repo("acme", "app")
	fmt.Printf("KONTINUOUS_URL=%s\nTOKEN=%s\nREPO=acme/app\nREPO_ID=%d\nWEBHOOK_SECRET=%s\nCOMMIT=%s\n",
		f.app.URL, f.tok, repoID(t, gh), gh.Hooks("acme", "app")[0].Secret, repo.Head("main"))
	select {
	case <-time.After(min(*fixtureFor, 30*time.Minute)):
	case <-t.Context().Done():
	}
}

// repoID is acme/app's GitHub id as the stand-in GitHub reports it.
func repoID(t *testing.T, gh *fakegithub.Server) int64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, gh.APIURL+"repos/acme/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "token tok-alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct{ ID int64 }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r.ID
}
