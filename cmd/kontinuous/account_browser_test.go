package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"
)

// TestBrowserConnectAndDisconnectBitbucketOnTheAccountPage: alice signs in
// with GitHub, connects her Bitbucket account from the Account page (the
// UI fetches the authorize URL with her token, so it is a connect, not a
// second sign-in) and stays signed in as her GitHub self; Disconnect is
// refused with the server's reason while the account owns a pipeline,
// then removes it. Her GitHub account offers no Disconnect.
func TestBrowserConnectAndDisconnectBitbucketOnTheAccountPage(t *testing.T) {
	chromiumPath(t)
	bb := fakebitbucket.New(t)
	bb.AddUser("alice")
	bb.AddRepo("acme", "bbapp").Grant("alice", "admin")
	w := newWorld(t, "--github-client-id", "ui-client", "--github-client-secret", "ui-secret",
		"--bitbucket-client-id", bb.ClientID, "--bitbucket-client-secret", bb.ClientSecret,
		"--bitbucket-url", bb.URL, "--bitbucket-api-url", bb.APIURL)
	w.gh.AddOAuthApp("ui-client", "ui-secret")
	w.gh.AuthorizeAs("alice")
	bb.SignIn("alice")

	b := newBrowser(t)
	b.do(chromedp.Navigate(w.app.URL + "/"))
	b.clickButton("Sign in with GitHub")
	b.wait("the pipelines page, signed in", `document.getElementById('session')?.textContent.includes('alice') && document.querySelector('h1')?.textContent === 'Pipelines'`)
	jwt := eval[string](b, `sessionStorage.getItem('kontinuous.jwt')`)

	b.clickButton("Account")
	const row = `document.querySelector('main li[data-forge="%s"]')`
	github, bitbucket := strings.Replace(row, "%s", "github", 1), strings.Replace(row, "%s", "bitbucket", 1)
	b.wait("Bitbucket not connected", bitbucket+`?.textContent.includes('Not connected')`)
	if !eval[bool](b, github+`.textContent.includes('Connected as alice') && !`+github+`.querySelector('button')`) {
		t.Fatalf("GitHub row: %q, want connected as alice with no Disconnect", eval[string](b, github+`.textContent`))
	}
	b.axe("account")

	b.clickButton("Connect")
	b.wait("the confirmation on the account page", `location.pathname === '/account' && document.getElementById('main').textContent.includes('Connected your Bitbucket account alice.')`)
	b.wait("Bitbucket connected", bitbucket+`?.textContent.includes('Connected as alice') && `+bitbucket+`.querySelector('button')?.textContent === 'Disconnect'`)
	if got := eval[string](b, `sessionStorage.getItem('kontinuous.jwt')`); got != jwt {
		t.Fatal("connecting Bitbucket replaced the session's token")
	}
	if id := eval[string](b, `JSON.parse(sessionStorage.getItem('kontinuous.user')).user_id`); id != "github|1001" {
		t.Fatalf("signed in as %q after connecting, want github|1001", id)
	}
	var me userView
	r := w.do("GET", "/api/v1/user", jwt, nil)
	expect(t, r, http.StatusOK)
	r.json(t, &me)
	if me.UserID != "github|1001" || len(me.Connections) != 2 || me.Connections[1].Forge != "bitbucket" ||
		me.Connections[1].Login != "alice" || me.Connections[1].Status != "connected" || !me.Connections[1].Linked {
		t.Fatalf("GET /api/v1/user after connecting: %s", r.body)
	}

	// While the Bitbucket account owns a pipeline the server refuses (409)
	// and the page says why.
	expect(t, w.do("POST", "/api/v1/pipelines", jwt, map[string]any{"owner": "acme", "repo": "bbapp", "forge": "bitbucket", "events": []string{"push"}}), http.StatusCreated)
	eval[bool](b, `(window.confirm = () => true, true)`)
	b.clickButton("Disconnect")
	b.wait("the refusal naming the pipeline", `[...document.querySelectorAll('main .note-error')].some((n) => n.textContent.includes('Could not disconnect Bitbucket') && n.textContent.includes('acme/bbapp'))`)
	expect(t, w.do("DELETE", "/api/v1/pipelines/acme/bbapp", jwt, nil), http.StatusNoContent)

	b.wait("Disconnect usable again", bitbucket+`?.querySelector('button')?.disabled === false`)
	b.clickButton("Disconnect")
	b.wait("Bitbucket disconnected", bitbucket+`?.textContent.includes('Not connected') && document.getElementById('main').textContent.includes('Disconnected your Bitbucket account alice.')`)
	b.wait("focus on Connect", `document.activeElement === `+bitbucket+`.querySelector('button') && document.activeElement.textContent === 'Connect'`)
	me = userView{}
	r = w.do("GET", "/api/v1/user", jwt, nil)
	expect(t, r, http.StatusOK)
	r.json(t, &me)
	if len(me.Connections) != 1 || me.Connections[0].Forge != "github" {
		t.Fatalf("GET /api/v1/user after disconnecting: %s", r.body)
	}
	if len(b.far) > 0 {
		t.Errorf("requests left loopback: %v", b.far)
	}
}
