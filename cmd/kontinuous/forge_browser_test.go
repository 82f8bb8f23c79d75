package main

import (
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kontinuous/kontinuous/pipeline"
)

// TestBrowserSignInWithBitbucketDataCenterAndCreateAPipeline signs in
// through the UI with a forge whose name has a hyphen (its callback route
// must match) and creates a pipeline from "New pipeline": the UI must ask
// for the repository's own forge, not the default (GitHub).
func TestBrowserSignInWithBitbucketDataCenterAndCreateAPipeline(t *testing.T) {
	chromiumPath(t)
	w, dc, _ := dcWorld(t)
	dc.AuthorizeAs("alice")

	b := newBrowser(t)
	b.do(chromedp.Navigate(w.app.URL + "/"))
	b.clickButton("Sign in with Bitbucket Data Center")
	b.wait("the signed-in user", `document.getElementById('session')?.textContent.includes('alice')`)
	b.wait("the pipelines page", `location.pathname === '/' && document.querySelector('h1')?.textContent === 'Pipelines'`)

	b.clickButton("New pipeline")
	b.wait("PRJ/app offered, named with its forge", `[...document.querySelectorAll('li.row')].some((li) => li.textContent.includes('PRJ/app') && li.textContent.includes('Bitbucket Data Center'))`)
	b.clickButton("Create")
	b.wait("the new pipeline's page", `location.pathname === '/PRJ/app'`)

	jwt := eval[string](b, `sessionStorage.getItem('kontinuous.jwt')`)
	r := w.do("GET", "/api/v1/pipelines/PRJ/app", jwt, nil)
	expect(t, r, http.StatusOK)
	var p pipeline.Pipeline
	r.json(t, &p)
	if p.Forge != "bitbucket-dc" {
		t.Fatalf("the UI created the pipeline on forge %q, want bitbucket-dc", p.Forge)
	}
	if len(b.far) > 0 {
		t.Errorf("requests left loopback: %v", b.far)
	}
}
