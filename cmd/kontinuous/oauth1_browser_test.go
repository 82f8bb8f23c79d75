package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserConsentPageSignsInThenAllows: Bitbucket sends a signed-out
// user to the consent page; they sign in, come back to it, see who asks
// and press Allow; the browser lands on Bitbucket's callback with a
// verifier that trades for an access token.
func TestBrowserConsentPageSignsInThenAllows(t *testing.T) {
	chromiumPath(t)
	landed := make(chan url.Values, 1)
	bbWeb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case landed <- r.URL.Query():
		default:
		}
		_, _ = w.Write([]byte("<!doctype html><title>Bitbucket</title><p>linked</p>")) // the browser may be gone
	}))
	t.Cleanup(bbWeb.Close)
	bb, file := newBitbucketDCWithCallback(t, bbWeb.URL+"/")
	w := newWorld(t, "--oauth1-consumers", file, "--github-client-id", "ui-client", "--github-client-secret", "ui-secret")
	bb.w = w
	w.gh.AddOAuthApp("ui-client", "ui-secret")
	w.gh.AuthorizeAs("carol")

	rt := bb.requestToken()
	b := newBrowser(t)
	b.do(chromedp.Navigate(w.app.URL + "/oauth/1.0a/authorize?oauth_token=" + url.QueryEscape(rt)))
	b.wait("the sign-in button", `document.querySelector('a.button.primary')`)
	b.do(chromedp.Click(chromedp.CSS(`a.button.primary`)))
	b.wait("the consent page after signing in", `location.pathname === '/oauth/1.0a/authorize' && document.querySelector('h1')?.textContent.includes('Bitbucket (test)')`)
	b.axe("consent")
	b.clickButton("Allow")
	var q url.Values
	select {
	case q = <-landed:
	case <-b.ctx.Done():
		t.Fatal("the browser never reached Bitbucket's callback")
	}
	if q.Get("oauth_token") != rt || q.Get("oauth_verifier") == "" {
		t.Fatalf("callback query %v", q)
	}
	v := formReply(t, bb.signed("POST", "/oauth/1.0a/access-token", map[string]string{"oauth_token": rt, "oauth_verifier": q.Get("oauth_verifier")}, nil, nil, nil))
	r := bb.signed("GET", "/api/v1/user", map[string]string{"oauth_token": v.Get("oauth_token")}, nil, nil, nil)
	expect(t, r, http.StatusOK)

	// The Account page lists the application; Revoke removes it.
	b.do(chromedp.Navigate(w.app.URL + "/account"))
	b.wait("the application listed", `[...document.querySelectorAll('main li.row')].some((li) => li.textContent.includes('Bitbucket (test)'))`)
	b.axe("account")
	eval[bool](b, `(window.confirm = () => true, true)`)
	b.clickButton("Revoke")
	b.wait("no application left", `document.querySelector('main')?.textContent.includes('You have not allowed any application')`)
	expect(t, bb.signed("GET", "/api/v1/user", map[string]string{"oauth_token": v.Get("oauth_token")}, nil, nil, nil), http.StatusUnauthorized)
}
