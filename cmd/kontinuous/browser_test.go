package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/kontinuous/kontinuous/pipeline"
)

// browserSpec: a coloured first stage, an approval, then a stage that
// writes a line every 200 ms for a minute (long enough to watch and cancel).
const browserSpec = specHead + `    stages:
      - name: hello
        type: command
        params:
          command: ["sh", "-c", "printf '\\033[32mgreen\\033[0m and plain\\n'; echo second line"]
      - name: gate
        type: wait
        params:
          message: ship it?
      - name: count
        type: command
        params:
          command: ["sh", "-c", "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo \"line $i\"; sleep 0.2; done"]
`

// markup is an author name made of markup: it must show as text.
const markup = `<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>`

// chromiumPath finds Debian's chromium. Missing: a failure in CI, else a skip.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
	}
	t.Skip("browser tests need chromium: apt-get install -y chromium (CI installs it)")
	return ""
}

// browser drives one headless chromium against the server.
type browser struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	far []string // requests that left loopback
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true), chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1200, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first call starts the browser: no timeout on it (it would end the browser).
	if err := chromedp.Listen(ctx, func(ev any) {
		e, ok := ev.(*network.EventRequestWillBeSent)
		if !ok || e.Request == nil {
			return
		}
		u, err := url.Parse(e.Request.URL)
		if err != nil || (u.Scheme != "data" && u.Scheme != "blob" && u.Hostname() != "127.0.0.1") {
			b.mu.Lock()
			b.far = append(b.far, e.Request.URL)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 120*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string, opts ...chromedp.EvaluateOption) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 120*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		b.t.Fatalf("browser: evaluating %.80q: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript condition until it is true (bounded generously).
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + "\n" + document.body.innerText`)) // for the message only
	b.t.Fatalf("waited 90 s for %s; page:\n%s", what, text)
}

// text of the page's main region.
func (b *browser) text() string {
	b.t.Helper()
	return eval[string](b, `document.getElementById('main').innerText`)
}

// clickButton clicks the button (or link) whose text is exactly label.
func (b *browser) clickButton(label string) {
	b.t.Helper()
	q, _ := json.Marshal(label)
	sel := fmt.Sprintf(`[...document.querySelectorAll('button, a')].find((e) => e.textContent.trim() === %s)`, q)
	b.wait("a button "+label, sel)
	eval[bool](b, sel+`.click(), true`)
}

var axeSource = sync.OnceValues(func() ([]byte, error) { return os.ReadFile(filepath.Join("testdata", "axe", "axe.min.js")) })

// axe runs axe-core on the page and fails on serious or critical violations.
func (b *browser) axe(page string) {
	b.t.Helper()
	src, err := axeSource()
	if err != nil {
		b.t.Fatal(err)
	}
	eval[bool](b, string(src)+";\ntrue")
	out := eval[[]string](b, `axe.run(document, {resultTypes: ['violations']}).then((r) => r.violations
		.filter((v) => v.impact === 'serious' || v.impact === 'critical')
		.map((v) => v.impact + ' ' + v.id + ': ' + v.help + ' at ' + v.nodes.map((n) => n.target.join(' ')).join(', ')))`,
		chromedp.EvalAwaitPromise)
	if len(out) > 0 {
		b.t.Errorf("axe-core on the %s page:\n%s", page, strings.Join(out, "\n"))
	}
}

// screenshot saves the page to docs/screenshots/name.png when
// KONTINUOUS_SCREENSHOTS=1 (a test run leaves the work tree as it was),
// else to a temporary directory (the capture still has to work).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 120*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatal(err)
	}
	dir := b.t.TempDir()
	if os.Getenv("KONTINUOUS_SCREENSHOTS") == "1" {
		dir = filepath.Join("..", "..", "docs", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// shots saves the page in the light and the dark scheme.
func (b *browser) shots(name string) {
	b.t.Helper()
	for _, scheme := range []string{"light", "dark"} {
		if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}); err != nil {
			b.t.Fatal(err)
		}
		b.screenshot(name + "-" + scheme)
	}
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}); err != nil {
		b.t.Fatal(err)
	}
}

func TestBrowserSignInFollowApproveCancel(t *testing.T) {
	chromiumPath(t)
	w := newWorld(t, "--github-client-id", "ui-client", "--github-client-secret", "ui-secret")
	w.gh.AddOAuthApp("ui-client", "ui-secret")
	w.gh.AuthorizeAs("alice")
	w.createPipeline()
	w.gh.Repo("acme", "app").Commit("main", map[string]string{".pipeline.yml": browserSpec}, "pipeline for the UI test")
	// alice only reads acme/readonly: "New pipeline" must not offer it.
	w.gh.AddRepo("acme", "readonly")
	w.gh.Grant("alice", "acme", "readonly", "read")
	alice := token(t, "alice", 1001, "tok-alice")
	r := w.do("POST", "/api/v1/pipelines/acme/app/builds", alice, map[string]any{"author": markup, "branch": "main"}, "X-Custom-Event", "dashboard")
	expect(t, r, http.StatusCreated)
	w.waitBuildWithin(120*time.Second, 1, func(b pipeline.Build) bool { return b.Status == pipeline.StatusWaiting })

	b := newBrowser(t)
	base := w.app.URL

	// A deep link to a build: signed out, it shows sign-in and comes back after.
	b.do(chromedp.Navigate(base + "/acme/app/builds/1"))
	b.wait("the sign-in button", `document.querySelector('a.button.primary')`)
	b.axe("sign-in")
	b.do(chromedp.Click(chromedp.CSS(`a.button.primary`)))
	b.wait("build 1 after signing in", `location.pathname === '/acme/app/builds/1' && document.querySelector('h1')?.textContent.startsWith('Build #1')`)
	b.wait("the signed-in user", `document.getElementById('session').textContent.includes('alice')`)
	if eval[bool](b, `location.href.includes(sessionStorage.getItem('kontinuous.jwt')) || location.href.includes('code=')`) {
		t.Fatal("the token or the code is in the address")
	}

	// Markup from the forge is text: shown literally, never run.
	b.wait("the author", `document.querySelector('dd.author')`)
	author := eval[string](b, `document.querySelector('dd.author').textContent`)
	xss := eval[bool](b, `window.__xss === 1 || !!document.querySelector('main img[src="x"], main script')`)
	if author != markup || xss {
		t.Fatalf("author shown as %q, script ran or markup parsed: %v", author, xss)
	}

	// Survives a reload; the coloured log of stage 1 is rendered as spans.
	b.do(chromedp.Reload())
	b.wait("build 1 after reload", `document.querySelector('h1')?.textContent.startsWith('Build #1')`)
	b.wait("stage 1's coloured log", `document.querySelector('.log .a-f2')?.textContent === 'green'`)

	// First load of the build page with an empty cache: bytes transferred
	// (gzip) and the time until it is drawn and usable (logged, not asserted).
	if _, err := chromedp.Call(b.ctx, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true}); err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Navigate(base + "/acme/app/builds/1"))
	b.wait("the build page drawn", `performance.getEntriesByName('kontinuous:rendered').length > 0`)
	type weight struct {
		Bytes, Requests                      int
		Interactive, DOMContentLoaded, Fetch float64
	}
	pw := eval[weight](b, `(() => {
		const n = performance.getEntriesByType('navigation')[0];
		const rs = performance.getEntriesByType('resource');
		return {Bytes: n.transferSize + rs.reduce((a, r) => a + r.transferSize, 0), Requests: 1 + rs.length,
			Interactive: performance.getEntriesByName('kontinuous:rendered')[0].startTime,
			DOMContentLoaded: n.domContentLoadedEventEnd, Fetch: n.responseEnd};
	})()`)
	t.Logf("build page first load: %d bytes transferred in %d requests; drawn and interactive at %.0f ms (DOMContentLoaded %.0f ms, page fetched %.0f ms)",
		pw.Bytes, pw.Requests, pw.Interactive, pw.DOMContentLoaded, pw.Fetch)
	if pw.Bytes > 150*1024 || pw.Bytes < 1000 {
		t.Errorf("build page first load transferred %d bytes, want ≤ 150 KB", pw.Bytes)
	}
	if _, err := chromedp.Call(b.ctx, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: false}); err != nil {
		t.Fatal(err)
	}
	b.wait("stage 1's coloured log again", `document.querySelector('.log .a-f2')?.textContent === 'green'`)
	// A link to a log line marks that line.
	b.do(chromedp.Navigate(base + "/acme/app/builds/1/stages/1#L5"))
	b.wait("line 5 marked", `document.querySelector('.line.hl')?.id === 'L5' && document.querySelector('#L5 .a-f2')`)
	b.wait("the Approve button", `[...document.querySelectorAll('button')].some((e) => e.textContent === 'Approve')`)
	b.axe("build")
	b.shots("build")

	// Approve the wait stage, then watch stage 3's log grow live.
	b.clickButton("Approve")
	w.waitBuildWithin(120*time.Second, 1, func(pb pipeline.Build) bool {
		return len(pb.Stages) == 3 && pb.Stages[2].Status == pipeline.StatusRunning
	})
	b.do(chromedp.Navigate(base + "/acme/app/builds/1/stages/3"))
	b.wait("stage 3's log lines", `document.querySelectorAll('.log .line').length >= 3`)
	first := eval[int](b, `document.querySelectorAll('.log .line').length`)
	b.wait("new log lines arriving", fmt.Sprintf(`document.querySelectorAll('.log .line').length >= %d`, first+5))
	b.wait("auto-scroll at the end", `(() => { const l = document.querySelector('.log'); return l.scrollTop + l.clientHeight >= l.scrollHeight - 30; })()`)

	// Readable at 375 px without horizontal scrolling.
	if _, err := chromedp.Call(b.ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 375, Height: 800, DeviceScaleFactor: 2, Mobile: true}); err != nil {
		t.Fatal(err)
	}
	b.wait("the 375 px layout", `window.innerWidth === 375`)
	if eval[bool](b, `document.documentElement.scrollWidth > 375`) {
		t.Error("the build page scrolls sideways at 375 px")
	}
	if _, err := chromedp.Call(b.ctx, emulation.ClearDeviceMetricsOverride, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}

	// Cancel the running build.
	b.clickButton("Cancel build")
	b.wait("the build canceled", `document.querySelector('h1 .status')?.textContent.includes('Canceled')`)
	w.waitBuildWithin(120*time.Second, 1, func(pb pipeline.Build) bool { return pb.Status == pipeline.StatusCanceled })

	// The pipeline and the pipelines list.
	b.do(chromedp.Navigate(base + "/acme/app"))
	b.wait("the builds list", `document.querySelector('.builds li')?.textContent.includes('Build #1')`)
	// A new build appears without a reload (the build feed, or its poll).
	r = w.do("POST", "/api/v1/pipelines/acme/app/builds", alice, map[string]any{"author": "carol", "branch": "main"}, "X-Custom-Event", "dashboard")
	expect(t, r, http.StatusCreated)
	b.wait("build 2 in the list", `[...document.querySelectorAll('.builds li')].some((li) => li.textContent.includes('Build #2'))`)
	b.axe("pipeline")
	b.shots("pipeline")
	// Settings (admin): .pipeline.yml as text, a secret set's keys but never its values.
	b.clickButton("Settings")
	b.wait("the definition", `document.querySelector('pre.file')?.textContent.includes('name: gate')`)
	b.do(chromedp.SendKeys(chromedp.CSS(`#sec-name`), "deploy-creds"), chromedp.SendKeys(chromedp.CSS(`#sec-data`), "API_TOKEN=s3cr3t-value"))
	b.clickButton("Save secret set")
	b.wait("the secret's keys", `document.getElementById('main').innerText.includes('keys: API_TOKEN')`)
	if strings.Contains(b.text(), "s3cr3t-value") || eval[string](b, `document.querySelector('#sec-data').value`) != "" {
		t.Fatal("the secret value is still on the page")
	}
	b.axe("settings")

	b.do(chromedp.Navigate(base + "/"))
	b.wait("the pipelines list", `document.querySelector('.card h2')?.textContent === 'acme/app'`)
	b.axe("pipelines")
	b.shots("pipelines")

	// New pipeline lists the repositories the caller administers (not
	// acme/readonly, which alice only reads); an error is shown in words.
	b.clickButton("New pipeline")
	b.wait("the repositories", `document.querySelector('.row')?.textContent.includes('acme/app')`)
	if s := b.text(); strings.Contains(s, "acme/readonly") {
		t.Error("New pipeline offers a repository the caller cannot administer")
	}
	b.axe("new pipeline")
	b.clickButton("Create")
	b.wait("the conflict in words", `document.querySelector('.note-error')?.textContent.includes('Could not create acme/app')`)

	// A 401 (here: a token the server refuses) returns to sign-in and back.
	eval[bool](b, `sessionStorage.setItem('kontinuous.jwt', 'not.a.token'), true`)
	b.do(chromedp.Navigate(base + "/acme/app/settings"))
	b.wait("sign-in after the 401", `document.getElementById('main').innerText.includes('Your session has ended')`)
	b.do(chromedp.Click(chromedp.CSS(`a.button.primary`)))
	b.wait("back on the settings page", `location.pathname === '/acme/app/settings' && document.querySelector('h1')?.textContent === 'Settings'`)

	// Sign out; bob, without access, sees nothing of the pipeline.
	b.clickButton("Sign out")
	b.wait("the sign-in page", `document.querySelector('a.button.primary')`)
	w.gh.AuthorizeAs("bob")
	b.do(chromedp.Navigate(base + "/acme/app/builds/1"))
	b.do(chromedp.Click(chromedp.CSS(`a.button.primary`)))
	b.wait("bob signed in", `document.getElementById('session').textContent.includes('bob')`)
	b.wait("not found for bob", `document.querySelector('h1')?.textContent === 'Not found'`)
	if s := b.text(); strings.Contains(s, "Build #1") || strings.Contains(s, "hello") || strings.Contains(s, "Approve") {
		t.Fatalf("bob sees the build:\n%s", s)
	}
	b.do(chromedp.Navigate(base + "/"))
	b.wait("bob's empty list", `document.getElementById('main').innerText.includes('No pipelines you can see yet')`)

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.far) > 0 {
		t.Fatalf("requests left loopback: %v", b.far)
	}
}
