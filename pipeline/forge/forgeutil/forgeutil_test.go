package forgeutil_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

func TestSafeCode(t *testing.T) {
	for in, want := range map[string]string{
		"invalid_grant":          "invalid_grant",
		"":                       "",
		"Invalid Grant <script>": "invalid_error_code",
		strings.Repeat("a", 65):  "invalid_error_code",
	} {
		if got := forgeutil.SafeCode(in); got != want {
			t.Errorf("SafeCode(%q) = %q, want %q", in, got, want)
		}
	}
}

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestSignature(t *testing.T) {
	s := forgeutil.Signature{Header: "X-Hub-Signature-256", Missing: "missing %s", Malformed: "malformed %s"}
	good := sign("secret", "body")
	if !forgeutil.SignatureShape(good) || forgeutil.SignatureShape("sha1="+good[7:]) || forgeutil.SignatureShape(good[:70]) {
		t.Fatal("SignatureShape misjudges")
	}
	if err := s.Verify(good, []byte("body"), "secret"); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	for _, c := range []struct{ sig, body, secret, msg string }{
		{good, "body", "", "webhook secret not configured"},
		{"", "body", "secret", "missing X-Hub-Signature-256"},
		{"sha256=zz", "body", "secret", "malformed X-Hub-Signature-256"},
		{good, "tampered", "secret", "X-Hub-Signature-256 does not match"},
		{sign("other", "body"), "body", "secret", "X-Hub-Signature-256 does not match"},
	} {
		err := s.Verify(c.sig, []byte(c.body), c.secret)
		if !errors.Is(err, pipeline.ErrUnauthorized) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("Verify(%q, %q, %q) = %v, want ErrUnauthorized %q", c.sig, c.body, c.secret, err, c.msg)
		}
	}
	noMissing := forgeutil.Signature{Header: "X-Hub-Signature", Malformed: "missing or malformed %s"}
	if err := noMissing.Verify("", nil, "secret"); err == nil || !strings.Contains(err.Error(), "missing or malformed X-Hub-Signature") {
		t.Errorf("empty signature without a Missing message: %v", err)
	}
}

// A token endpoint's error reply, an endpoint that cannot be reached and
// a context that ended are told apart, and only the safe code survives.
func TestTokenFailureOf(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"secret-ish detail"}`))
	}))
	defer srv.Close()
	cfg := oauth2.Config{ClientID: "id", ClientSecret: "s", Endpoint: oauth2.Endpoint{TokenURL: srv.URL}}
	ctx := context.Background()
	_, err := cfg.Exchange(ctx, "code")
	tf := forgeutil.TokenFailureOf(ctx, err)
	if !tf.Answered || tf.Code != "invalid_grant" || tf.Status != http.StatusBadRequest {
		t.Fatalf("error reply: %+v", tf)
	}
	if e := tf.StatusError("Forge"); !errors.Is(e, pipeline.ErrUpstream) || !strings.Contains(e.Error(), "Forge's token endpoint answered HTTP 400") {
		t.Fatalf("StatusError = %v", e)
	}

	srv.Close()
	_, err = cfg.Exchange(ctx, "code")
	if tf := forgeutil.TokenFailureOf(ctx, err); tf.Answered || tf.Canceled != nil || tf.Detail == "" {
		t.Fatalf("unreachable: %+v", tf)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = cfg.Exchange(cctx, "code")
	if tf := forgeutil.TokenFailureOf(cctx, err); tf.Answered || !errors.Is(tf.Canceled, context.Canceled) {
		t.Fatalf("canceled: %+v", tf)
	}
}

func TestDeliveryChecksSignatureShapeAndID(t *testing.T) {
	mk := func(sig, id string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("X-Sig", sig)
		r.Header.Set("X-Id", id)
		return r
	}
	good := sign("s", "b")
	if req, err := forgeutil.Delivery(mk(good, "d1"), "push", "X-Id", "X-Sig"); err != nil || req.Event != "push" || req.Delivery != "d1" || req.Signature != good {
		t.Fatalf("good delivery: %+v %v", req, err)
	}
	if _, err := forgeutil.Delivery(mk("sha256=nothex", "d1"), "push", "X-Id", "X-Sig"); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("malformed signature: %v", err)
	}
	if _, err := forgeutil.Delivery(mk(good, " "), "push", "X-Id", "X-Sig"); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("no delivery id: %v", err)
	}
}

func TestHookReadsOnlyItsForgesDeliveries(t *testing.T) {
	h := forgeutil.Hook{
		Event:     pipeline.WebhookHeader{Name: "X-Ev", Description: "event"},
		Delivery:  pipeline.WebhookHeader{Name: "X-Id", Description: "id"},
		Signature: pipeline.WebhookHeader{Name: "X-Sig", Description: "signature"},
	}
	if got := h.Headers(); len(got) != 3 || got[0] != h.Event || got[1] != h.Delivery || got[2] != h.Signature {
		t.Fatalf("Headers() = %+v", got)
	}
	good := sign("s", "b")
	mk := func(event string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("X-Ev", event)
		r.Header.Set("X-Sig", good)
		r.Header.Set("X-Id", "d1")
		return r
	}
	notPing := func(_ *http.Request, event string) bool { return event != "ping" }
	if req, ok, err := h.Read(mk("push"), notPing); !ok || err != nil || req.Event != "push" || req.Delivery != "d1" || req.Signature != good {
		t.Errorf("its delivery: %+v %v %v", req, ok, err)
	}
	if _, ok, err := h.Read(mk("ping"), notPing); ok || err != nil {
		t.Errorf("a delivery mine refuses: ok %v, %v", ok, err)
	}
	if _, ok, err := h.Read(mk(""), nil); ok || err != nil {
		t.Errorf("no event header: ok %v, %v", ok, err)
	}
	bad := mk("push")
	bad.Header.Set("X-Sig", "sha256=nothex")
	if _, ok, err := h.Read(bad, nil); !ok || !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Errorf("malformed signature: ok %v, %v", ok, err)
	}
}

func TestNameRules(t *testing.T) {
	n := forgeutil.NameRules{Owner: regexp.MustCompile(`^[a-z]+$`), Repo: regexp.MustCompile(`^[a-z.]+$`), OwnerWhat: "owner", RepoWhat: "repo"}
	if err := n.Validate("acme", "app"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"Acme", "app"}, {"acme", ".."}, {"acme", "."}, {"acme", "a/b"}} {
		if err := n.Validate(c[0], c[1]); !errors.Is(err, pipeline.ErrInvalid) {
			t.Errorf("Validate(%q, %q) = %v, want ErrInvalid", c[0], c[1], err)
		}
	}
}
