// Package forgeutil holds what every forge adapter needs and none should
// write again: reducing an OAuth token-endpoint failure to what is safe to
// log, verifying an X-Hub-Signature HMAC, and the short permission cache.
// It imports no forge; the forges import it (scripts/check-deps.sh keeps
// it so).
package forgeutil

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/kontinuous/kontinuous/pipeline"
)

// SafeCode keeps an OAuth error code only if it looks like one (at most
// 64 of [a-z0-9_]), so that a reply cannot smuggle arbitrary text into our
// messages; anything else is "invalid_error_code".
func SafeCode(s string) string {
	if len(s) > 64 {
		return "invalid_error_code"
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && r != '_' && (r < '0' || r > '9') {
			return "invalid_error_code"
		}
	}
	return s
}

// TokenFailure is a failed oauth2 token request (code exchange or
// refresh) reduced to what is safe to log: never a token, code or secret.
type TokenFailure struct {
	// Answered is true when the token endpoint replied with an error.
	Answered bool
	// Code is the reply's OAuth error code (through SafeCode); "" when the
	// reply had none.
	Code string
	// Status is the reply's HTTP status (0 when unknown).
	Status int
	// Canceled is the context's error when the request did not get a
	// reply because the context ended.
	Canceled error
	// Detail is the transport failure when the endpoint could not be
	// reached ("invalid reply" when the failure was not a transport one).
	Detail string
}

// TokenFailureOf reduces err, returned by an oauth2 token request made
// with ctx, to a TokenFailure.
func TokenFailureOf(ctx context.Context, err error) TokenFailure {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		f := TokenFailure{Answered: true, Code: SafeCode(re.ErrorCode)}
		if re.Response != nil {
			f.Status = re.Response.StatusCode
		}
		return f
	}
	if ctx.Err() != nil {
		return TokenFailure{Canceled: ctx.Err()}
	}
	f := TokenFailure{Detail: "invalid reply"}
	var ue *url.Error
	if errors.As(err, &ue) {
		f.Detail = ue.Err.Error()
	}
	return f
}

// StatusError is the error of a reply without an OAuth error code:
// ErrUpstream "<forge>'s token endpoint answered HTTP <status>".
func (f TokenFailure) StatusError(forge string) error {
	return pipeline.Errorf(pipeline.ErrUpstream, "%s's token endpoint answered HTTP %d", forge, f.Status)
}

// SignatureShape tells whether sig has the shape of an X-Hub-Signature
// value: "sha256=" and 64 hex digits.
func SignatureShape(sig string) bool {
	h, ok := strings.CutPrefix(sig, "sha256=")
	if !ok || len(h) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// Signature messages: what VerifySignature says for each failure, with
// the header's name where a message has %s.
type Signature struct {
	// Header is the signature header's name (X-Hub-Signature-256).
	Header string
	// Missing is said of an empty signature; "" treats it as malformed.
	Missing string
	// Malformed is said of a signature that is not "sha256=<64 hex>".
	Malformed string
}

// Verify checks sig = "sha256=<hex HMAC-SHA256(secret, body)>" in
// constant time. Every failure is ErrUnauthorized: no secret configured,
// a missing or malformed signature, or one that does not match.
func (s Signature) Verify(sig string, body []byte, secret string) error {
	if secret == "" {
		return pipeline.Errorf(pipeline.ErrUnauthorized, "webhook secret not configured")
	}
	if sig == "" && s.Missing != "" {
		return pipeline.Errorf(pipeline.ErrUnauthorized, s.Missing, s.Header)
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil || len(got) != sha256.Size {
		return pipeline.Errorf(pipeline.ErrUnauthorized, s.Malformed, s.Header)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), got) {
		return pipeline.Errorf(pipeline.ErrUnauthorized, "%s does not match", s.Header)
	}
	return nil
}

// Delivery reads a webhook delivery of event from r's headers: the
// delivery id from deliveryHeader and the signature from signatureHeader.
// The signature's shape (sha256= and 64 hex digits) and a delivery id are
// checked here, before the body is read: an unsigned or malformed
// delivery gets the message a wrong signature gets (ErrUnauthorized), one
// without an id ErrInvalid.
func Delivery(r *http.Request, event, deliveryHeader, signatureHeader string) (pipeline.WebhookRequest, error) {
	req := pipeline.WebhookRequest{Event: event, Delivery: r.Header.Get(deliveryHeader), Signature: r.Header.Get(signatureHeader)}
	if !SignatureShape(req.Signature) {
		return req, pipeline.Errorf(pipeline.ErrUnauthorized, "webhook signature does not match")
	}
	if strings.TrimSpace(req.Delivery) == "" {
		return req, pipeline.Invalid(deliveryHeader, "a delivery id is required")
	}
	return req, nil
}

// Hook names the three headers a forge's webhook deliveries carry (the
// event, the delivery id and the X-Hub-Signature-style HMAC), each with
// what the API docs say of it: what a forge's Delivery and WebhookHeaders
// need.
type Hook struct {
	Event, Delivery, Signature pipeline.WebhookHeader
}

// Headers lists h's headers, for pipeline.Forge's WebhookHeaders.
func (h Hook) Headers() []pipeline.WebhookHeader {
	return []pipeline.WebhookHeader{h.Event, h.Delivery, h.Signature}
}

// Read is pipeline.Forge's Delivery for h: r is the forge's when it
// carries an h.Event header and mine (nil: any) accepts r with that
// event; it is then read as Delivery reads it. ok is false for a request
// that is not the forge's.
func (h Hook) Read(r *http.Request, mine func(r *http.Request, event string) bool) (req pipeline.WebhookRequest, ok bool, err error) {
	event := r.Header.Get(h.Event.Name)
	if event == "" || (mine != nil && !mine(r, event)) {
		return pipeline.WebhookRequest{}, false, nil
	}
	req, err = Delivery(r, event, h.Delivery.Name, h.Signature.Name)
	return req, true, err
}

// NameRules are a forge's rules for repository names: Owner and Repo
// match the whole name; a repository is never "." or "..". OwnerWhat and
// RepoWhat name them in errors ("GitHub owner name").
type NameRules struct {
	Owner, Repo         *regexp.Regexp
	OwnerWhat, RepoWhat string
}

// Validate checks owner and repo (ErrInvalid naming the field).
func (n NameRules) Validate(owner, repo string) error {
	if !n.Owner.MatchString(owner) {
		return pipeline.Invalid("owner", "%q is not a valid %s", owner, n.OwnerWhat)
	}
	if !n.Repo.MatchString(repo) || repo == "." || repo == ".." {
		return pipeline.Invalid("repo", "%q is not a valid %s", repo, n.RepoWhat)
	}
	return nil
}

// Exchange trades an authorization code at cfg's token endpoint, through
// hc. The oauth2 error is returned as it is, for the forge to map (see
// TokenFailureOf).
func Exchange(ctx context.Context, cfg *oauth2.Config, hc *http.Client, code string, opts ...oauth2.AuthCodeOption) (pipeline.ForgeToken, error) {
	t, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, hc), code, opts...)
	if err != nil {
		return pipeline.ForgeToken{}, err
	}
	return pipeline.ForgeToken{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry}, nil
}

// Refresh trades tok's refresh token at cfg's token endpoint, through hc,
// for a new token. The oauth2 error is returned as it is, for the forge to
// map.
func Refresh(ctx context.Context, cfg *oauth2.Config, hc *http.Client, tok pipeline.ForgeToken) (pipeline.ForgeToken, error) {
	// An expiry in the past makes the token source refresh now.
	old := &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Unix(1, 0)}
	t, err := cfg.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, hc), old).Token()
	if err != nil {
		return pipeline.ForgeToken{}, err
	}
	return pipeline.ForgeToken{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry}, nil
}
