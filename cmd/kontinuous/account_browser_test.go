package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"
)

// TestBrowserConnectAndDisconnectBitbucketOnTheAccountPage: alice signs in
// with GitHub, connects her Bitbucket account from the Account page (the
// UI fetches the authorize URL with her token, so it is a connect, not a
// second sign-in) and stays signed in as her GitHub self; when it expires
// she reconnects it from the pipelines page's banner; Disconnect is
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

	// A token about to expire, so that the server refreshes it on next use.
	bb.SetTokenTTL(30 * time.Second)
	b.clickButton("Connect")
	b.wait("the confirmation on the account page", `location.pathname === '/account' && document.getElementById('main').textContent.includes('Connected your Bitbucket account alice.')`)
	b.wait("Bitbucket connected", bitbucket+`?.textContent.includes('Connected as alice') && `+bitbucket+`.querySelector('button')?.textContent === 'Disconnect'`)
	if got := eval[string](b, `sessionStorage.getItem('kontinuous.jwt')`); got != jwt {
		t.Fatal("connecting Bitbucket replaced the session's token")
	}
	// Readable at 375 px without horizontal scrolling, rows and buttons
	// included.
	if _, err := chromedp.Call(b.ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 375, Height: 800, DeviceScaleFactor: 2, Mobile: true}); err != nil {
		t.Fatal(err)
	}
	b.wait("the 375 px layout", `window.innerWidth === 375`)
	if eval[bool](b, `document.documentElement.scrollWidth > 375`) {
		t.Error("the account page scrolls sideways at 375 px")
	}
	if _, err := chromedp.Call(b.ctx, emulation.ClearDeviceMetricsOverride, cdp.Empty{}); err != nil {
		t.Fatal(err)
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

	// The connection expires (its refresh token revoked): the account page
	// offers Reconnect, and so does the banner on the pipelines page, which
	// reconnects with the session's token (not a sign-in as the Bitbucket
	// account) and comes back to the account page.
	bb.SetTokenTTL(2 * time.Hour)
	bb.RevokeRefreshTokens()
	r = w.do("GET", "/api/v1/repositories", jwt, nil)
	expect(t, r, http.StatusOK)
	if r.header.Get("Kontinuous-Reconnect") != "bitbucket" {
		t.Fatalf("the Bitbucket connection did not expire: %v %s", r.header, r.body)
	}
	b.do(chromedp.Reload())
	b.wait("Bitbucket expired with Reconnect", bitbucket+`?.textContent.includes('expired') && `+bitbucket+`.querySelector('button')?.textContent === 'Reconnect'`)
	b.do(chromedp.Navigate(w.app.URL + "/"))
	b.wait("the banner's Reconnect", `document.querySelector('.banner')?.textContent.includes('Reconnect')`)
	b.clickButton("Reconnect")
	b.wait("the confirmation after reconnecting", `location.pathname === '/account' && document.getElementById('main').textContent.includes('Connected your Bitbucket account alice.')`)
	b.wait("Bitbucket connected again", bitbucket+`?.textContent.includes('Connected as alice')`)
	if got := eval[string](b, `sessionStorage.getItem('kontinuous.jwt')`); got != jwt {
		t.Fatal("reconnecting Bitbucket replaced the session's token")
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

	// A connect the server refuses (a made-up state, as when the consent
	// page was left open past the state's 10 minutes) is shown on the
	// callback page and keeps the session.
	b.do(chromedp.Navigate(w.app.URL + "/auth/callback/bitbucket?code=made-up&state=ks1.made-up"))
	b.wait("the refused connect", `document.querySelector('h1')?.textContent === 'Could not connect Bitbucket'`)
	if got := eval[string](b, `sessionStorage.getItem('kontinuous.jwt')`); got != jwt {
		t.Fatal("a refused connect signed the user out")
	}
	b.clickButton("Back to your account")
	b.wait("the account page, still signed in", `location.pathname === '/account' && document.getElementById('session')?.textContent.includes('alice')`)
	if len(b.far) > 0 {
		t.Errorf("requests left loopback: %v", b.far)
	}
}
