package oauth1

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
)

// Limits of the protocol.
const (
	// RequestTokenTTL is how long a request token can be authorized and
	// exchanged.
	RequestTokenTTL = 10 * time.Minute
	// TimestampWindow is how far oauth_timestamp may be from the server's
	// clock, either way.
	TimestampWindow = 5 * time.Minute
	// SignatureMethod is the only method accepted.
	SignatureMethod = "RSA-SHA1"
	// Source is the auth.Identity Source of callers authenticated with an
	// OAuth 1.0a access token.
	Source = "oauth1"
	// maxNonceLen bounds oauth_nonce.
	maxNonceLen = 128
)

// Store keeps request tokens and grants (pipeline/etcdstore implements
// it). Tokens are known to it only by their hashes. Defined here, where it
// is consumed.
type Store interface {
	// CreateOAuth1Request stores r until r.Expires.
	CreateOAuth1Request(ctx context.Context, r pipeline.OAuth1Request) error
	// GetOAuth1Request returns a stored request token (ErrNotFound when
	// unknown, used or expired).
	GetOAuth1Request(ctx context.Context, tokenHash string) (pipeline.OAuth1Request, error)
	// UpdateOAuth1Request applies fn to the stored request token, atomically.
	UpdateOAuth1Request(ctx context.Context, tokenHash string, fn func(*pipeline.OAuth1Request) error) (pipeline.OAuth1Request, error)
	// TakeOAuth1Request deletes a request token and returns it; of
	// concurrent callers only one gets it, the others ErrNotFound.
	TakeOAuth1Request(ctx context.Context, tokenHash string) (pipeline.OAuth1Request, error)
	// PutOAuth1Grant stores an access token's grant.
	PutOAuth1Grant(ctx context.Context, g pipeline.OAuth1Grant) error
	// GetOAuth1Grant returns the grant of an access token (ErrNotFound).
	GetOAuth1Grant(ctx context.Context, tokenHash string) (pipeline.OAuth1Grant, error)
	// ListOAuth1Grants returns a user's grants.
	ListOAuth1Grants(ctx context.Context, userID string) ([]pipeline.OAuth1Grant, error)
	// DeleteOAuth1Grants deletes the grants of userID (every user's when
	// empty) that match, and says how many.
	DeleteOAuth1Grants(ctx context.Context, userID string, match func(pipeline.OAuth1Grant) bool) (int, error)
}

// Config configures New.
type Config struct {
	// Consumers are the registered consumers (LoadConsumers).
	Consumers []Consumer
	// PublicURL is the server's public base URL: signatures are checked
	// against its scheme, host and port.
	PublicURL string
	// Store keeps tokens and grants.
	Store Store
	// Nonces records the nonces seen (per consumer) until they could no
	// longer pass the timestamp check; shared by every server.
	Nonces auth.OnceStore
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Provider is the OAuth 1.0a provider. It keeps no per-request state and
// is safe for concurrent use.
type Provider struct {
	consumers map[string]*Consumer
	public    *url.URL
	store     Store
	nonces    auth.OnceStore
	now       func() time.Time
}

// New checks cfg and returns a Provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Store == nil || cfg.Nonces == nil {
		return nil, errors.New("oauth1: a Store and a nonce store are required")
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("oauth1: public URL %q is not absolute", cfg.PublicURL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Provider{consumers: map[string]*Consumer{}, public: u, store: cfg.Store, nonces: cfg.Nonces, now: cfg.Now}
	for i := range cfg.Consumers {
		c := cfg.Consumers[i]
		p.consumers[c.Key] = &c
	}
	return p, nil
}

// Consumer returns the registered consumer with key.
func (p *Provider) Consumer(key string) (Consumer, error) {
	c, ok := p.consumers[key]
	if !ok {
		return Consumer{}, pipeline.Errorf(pipeline.ErrNotFound, "no OAuth consumer %q is registered", key)
	}
	return *c, nil
}

// Prune deletes the grants of consumers no longer registered (the
// operator removed them from the consumers file): their access tokens stop
// working for good, and re-adding the consumer does not revive them.
func (p *Provider) Prune(ctx context.Context) (int, error) {
	return p.store.DeleteOAuth1Grants(ctx, "", func(g pipeline.OAuth1Grant) bool { return p.consumers[g.ConsumerKey] == nil })
}

func unauthorized(format string, a ...any) error {
	return pipeline.Errorf(pipeline.ErrUnauthorized, "OAuth: "+format, a...)
}

// hash is the hex SHA-256 of a token or verifier: what is stored.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// newToken is 256 random bits, base64url.
func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// signed is a request whose signature checked out.
type signed struct {
	consumer *Consumer
	oauth    map[string]string // the oauth_* parameters
}

// verify checks r's OAuth 1.0a signature (RFC 5849 §3.2): protocol
// parameters from the Authorization header (or, for the protocol
// endpoints, the query or form body), the signature method, the
// consumer, the timestamp window and the RSA-SHA1 signature over the
// base string of every parameter. It stores nothing; the caller records
// the nonce (useNonce) once everything else passed.
func (p *Provider) verify(r *http.Request, headerOnly bool) (signed, error) {
	all, err := requestParams(r, headerOnly)
	if err != nil {
		return signed{}, err
	}
	oauth, sig, params, err := splitOAuth(all)
	if err != nil {
		return signed{}, err
	}
	c, err := p.checkProtocol(oauth)
	if err != nil {
		return signed{}, err
	}
	uri := BaseURI(p.public, r.URL.EscapedPath())
	if err := VerifyRSASHA1(c.PublicKey, BaseString(r.Method, uri, params), sig); err != nil {
		return signed{}, unauthorized("bad signature: %v (checked against %s %s with the consumer's public key)", err, strings.ToUpper(r.Method), uri)
	}
	return signed{consumer: c, oauth: oauth}, nil
}

// requestParams gathers every parameter of r: the Authorization header's
// (exactly one header; required when headerOnly), the query's and a form
// body's.
func requestParams(r *http.Request, headerOnly bool) ([]Param, error) {
	var all []Param
	hs := r.Header.Values("Authorization")
	if len(hs) > 1 {
		return nil, unauthorized("more than one Authorization header")
	}
	if len(hs) == 1 {
		hp, err := ParseAuthorization(hs[0])
		if err != nil {
			return nil, unauthorized("%v", err)
		}
		all = hp
	} else if headerOnly {
		return nil, unauthorized("missing Authorization: OAuth header")
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, unauthorized("the query string is malformed")
	}
	form, err := readForm(r)
	if err != nil {
		return nil, err
	}
	for _, vals := range []url.Values{q, form} {
		for n, vs := range vals {
			for _, v := range vs {
				all = append(all, Param{n, v})
			}
		}
	}
	return all, nil
}

// splitOAuth separates the oauth_* protocol parameters (each at most
// once) and the signature from the parameters the signature covers
// (everything but oauth_signature), and checks the required ones are
// there.
func splitOAuth(all []Param) (oauth map[string]string, sig string, params []Param, err error) {
	oauth = map[string]string{}
	for _, prm := range all {
		if !strings.HasPrefix(prm.Name, "oauth_") {
			params = append(params, prm)
			continue
		}
		if _, dup := oauth[prm.Name]; dup || (prm.Name == "oauth_signature" && sig != "") {
			return nil, "", nil, unauthorized("%s is given more than once", prm.Name)
		}
		if prm.Name == "oauth_signature" {
			sig = prm.Value
			continue
		}
		oauth[prm.Name] = prm.Value
		params = append(params, prm)
	}
	for _, n := range []string{"oauth_consumer_key", "oauth_signature_method", "oauth_timestamp", "oauth_nonce"} {
		if oauth[n] == "" {
			return nil, "", nil, unauthorized("%s is missing", n)
		}
	}
	if sig == "" {
		return nil, "", nil, unauthorized("oauth_signature is missing")
	}
	return oauth, sig, params, nil
}

// checkProtocol checks the signature method, the version, the consumer,
// the timestamp window and the nonce's length, and returns the consumer.
func (p *Provider) checkProtocol(oauth map[string]string) (*Consumer, error) {
	if m := oauth["oauth_signature_method"]; m != SignatureMethod {
		return nil, unauthorized("oauth_signature_method %q is not accepted; use %s", m, SignatureMethod)
	}
	if v, ok := oauth["oauth_version"]; ok && v != "1.0" {
		return nil, unauthorized("oauth_version must be 1.0")
	}
	c := p.consumers[oauth["oauth_consumer_key"]]
	if c == nil {
		return nil, unauthorized("unknown consumer %q", oauth["oauth_consumer_key"])
	}
	ts, err := strconv.ParseInt(oauth["oauth_timestamp"], 10, 64)
	if err != nil || ts <= 0 {
		return nil, unauthorized("oauth_timestamp is not a number of seconds")
	}
	if d := p.now().Sub(time.Unix(ts, 0)); d > TimestampWindow || d < -TimestampWindow {
		return nil, unauthorized("oauth_timestamp is more than %s from the server's clock", TimestampWindow)
	}
	if len(oauth["oauth_nonce"]) > maxNonceLen {
		return nil, unauthorized("oauth_nonce is longer than %d characters", maxNonceLen)
	}
	return c, nil
}

// readForm reads a form-encoded body (its parameters are signed, RFC 5849
// §3.4.1.3.1) and puts the bytes back for the handler.
func readForm(r *http.Request) (url.Values, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")) // a bad type reads as none: not a form
	if ct != "application/x-www-form-urlencoded" {
		return nil, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err // *http.MaxBytesError maps to 413
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	f, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, unauthorized("the form body is malformed")
	}
	return f, nil
}

// useNonce records the consumer's nonce until it could no longer pass the
// timestamp check; a nonce seen before is a replay.
func (p *Provider) useNonce(ctx context.Context, s signed) error {
	id := "oauth1-nonce." + hash(s.consumer.Key+"\x00"+s.oauth["oauth_nonce"])
	err := p.nonces.UseOnce(ctx, id, p.now().Add(2*TimestampWindow+time.Minute))
	if errors.Is(err, pipeline.ErrConflict) {
		return unauthorized("oauth_nonce was used before (replayed request?)")
	}
	return err
}

// RequestToken serves POST /oauth/1.0a/request-token: a signed request
// with oauth_callback under the consumer's callback prefix gets a request
// token that lives RequestTokenTTL. "oob" is refused: Application Links
// always send a callback.
func (p *Provider) RequestToken(r *http.Request) (url.Values, error) {
	s, err := p.verify(r, false)
	if err != nil {
		return nil, err
	}
	cb := s.oauth["oauth_callback"]
	switch {
	case cb == "":
		return nil, pipeline.Invalid("oauth_callback", "is missing")
	case cb == "oob":
		return nil, pipeline.Invalid("oauth_callback", "out-of-band (oob) is not supported; give a URL under %s", s.consumer.Callback)
	case len(cb) > 2048 || !allows(s.consumer.Callback, cb):
		return nil, pipeline.Invalid("oauth_callback", "must start with the consumer's registered callback %s", s.consumer.Callback)
	}
	if _, ok := s.oauth["oauth_token"]; ok {
		return nil, pipeline.Invalid("oauth_token", "must not be sent when asking for a request token")
	}
	ctx := r.Context()
	if err := p.useNonce(ctx, s); err != nil {
		return nil, err
	}
	tok := newToken()
	req := pipeline.OAuth1Request{TokenHash: hash(tok), ConsumerKey: s.consumer.Key, Callback: cb,
		Expires: p.now().Add(RequestTokenTTL).UnixNano()}
	if err := p.store.CreateOAuth1Request(ctx, req); err != nil {
		return nil, fmt.Errorf("oauth1: store request token: %w", err)
	}
	return url.Values{"oauth_token": {tok}, "oauth_token_secret": {newToken()}, "oauth_callback_confirmed": {"true"}}, nil
}

// Pending describes a request token awaiting the user's decision.
type Pending struct {
	ConsumerKey  string `json:"consumer_key" description:"the consumer's key"`
	ConsumerName string `json:"consumer_name" description:"who asks (the name the operator registered)"`
	Callback     string `json:"callback" description:"where the browser goes after the decision"`
	Expires      int64  `json:"expires" description:"when the request expires (Unix nanoseconds)"`
}

// pending reads a request token that can still be decided on.
func (p *Provider) pending(ctx context.Context, token string) (pipeline.OAuth1Request, *Consumer, error) {
	if token == "" || len(token) > 256 {
		return pipeline.OAuth1Request{}, nil, pipeline.Invalid("oauth_token", "is missing")
	}
	req, err := p.store.GetOAuth1Request(ctx, hash(token))
	if errors.Is(err, pipeline.ErrNotFound) || err == nil && p.now().UnixNano() >= req.Expires {
		return req, nil, pipeline.Errorf(pipeline.ErrNotFound, "this authorization request is unknown, used or expired (they last %s); start again from the application", RequestTokenTTL)
	}
	if err != nil {
		return req, nil, err
	}
	c := p.consumers[req.ConsumerKey]
	if c == nil {
		return req, nil, pipeline.Errorf(pipeline.ErrNotFound, "the application that asked is no longer registered")
	}
	return req, c, nil
}

// checkUser refuses callers that authenticated with an OAuth access
// token: only the user, signed in, decides on and revokes applications.
func checkUser(id auth.Identity) error {
	if id.Source == Source {
		return pipeline.Errorf(pipeline.ErrForbidden, "an OAuth application cannot manage applications; sign in as the user")
	}
	return nil
}

// Describe tells the consent page who asks.
func (p *Provider) Describe(ctx context.Context, id auth.Identity, token string) (Pending, error) {
	if err := checkUser(id); err != nil {
		return Pending{}, err
	}
	req, c, err := p.pending(ctx, token)
	if err != nil {
		return Pending{}, err
	}
	if req.UserID != "" {
		return Pending{}, pipeline.Errorf(pipeline.ErrConflict, "this authorization request was decided already")
	}
	return Pending{ConsumerKey: c.Key, ConsumerName: c.Name, Callback: req.Callback, Expires: req.Expires}, nil
}

// Decide records the user's decision on a request token and returns where
// to send the browser: the callback with oauth_token and oauth_verifier
// when allowed; without a verifier, the token void, when denied.
func (p *Provider) Decide(ctx context.Context, id auth.Identity, token string, allow bool) (string, error) {
	if err := checkUser(id); err != nil {
		return "", err
	}
	req, _, err := p.pending(ctx, token)
	if err != nil {
		return "", err
	}
	decided := pipeline.Errorf(pipeline.ErrConflict, "this authorization request was decided already")
	if req.UserID != "" {
		return "", decided
	}
	q := url.Values{"oauth_token": {token}}
	if !allow {
		if _, err := p.store.TakeOAuth1Request(ctx, req.TokenHash); err != nil && !errors.Is(err, pipeline.ErrNotFound) {
			return "", err
		}
		return withQuery(req.Callback, q), nil
	}
	verifier := newToken()
	_, err = p.store.UpdateOAuth1Request(ctx, req.TokenHash, func(r *pipeline.OAuth1Request) error {
		if r.UserID != "" {
			return decided
		}
		r.UserID, r.Login, r.VerifierHash = id.UserID, id.Login, hash(verifier)
		return nil
	})
	if err != nil {
		return "", err
	}
	q.Set("oauth_verifier", verifier)
	return withQuery(req.Callback, q), nil
}

// withQuery adds q to the query of u (a URL checked at issue).
func withQuery(u string, q url.Values) string {
	if strings.Contains(u, "?") {
		return u + "&" + q.Encode()
	}
	return u + "?" + q.Encode()
}

// AccessToken serves POST /oauth/1.0a/access-token: a signed request
// with the authorized request token and its verifier gets an access token
// bound to the user who allowed it. The request token is used up by the
// attempt, whatever its outcome.
func (p *Provider) AccessToken(r *http.Request) (url.Values, error) {
	s, err := p.verify(r, false)
	if err != nil {
		return nil, err
	}
	tok, ver := s.oauth["oauth_token"], s.oauth["oauth_verifier"]
	if tok == "" || ver == "" {
		return nil, unauthorized("oauth_token and oauth_verifier are required")
	}
	ctx := r.Context()
	gone := unauthorized("the request token is unknown, used or expired")
	req, err := p.store.GetOAuth1Request(ctx, hash(tok))
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		return nil, gone
	case err != nil:
		return nil, err
	case req.ConsumerKey != s.consumer.Key:
		return nil, gone
	case req.UserID == "":
		return nil, unauthorized("the user has not allowed this request token (yet)")
	}
	if err := p.useNonce(ctx, s); err != nil {
		return nil, err
	}
	req, err = p.store.TakeOAuth1Request(ctx, req.TokenHash)
	if errors.Is(err, pipeline.ErrNotFound) {
		return nil, gone
	}
	if err != nil {
		return nil, err
	}
	if p.now().UnixNano() >= req.Expires {
		return nil, gone
	}
	if subtle.ConstantTimeCompare([]byte(hash(ver)), []byte(req.VerifierHash)) != 1 {
		return nil, unauthorized("oauth_verifier is wrong; the request token is now void")
	}
	access := newToken()
	g := pipeline.OAuth1Grant{TokenHash: hash(access), ConsumerKey: req.ConsumerKey, UserID: req.UserID, Login: req.Login, Created: p.now().UnixNano()}
	if err := p.store.PutOAuth1Grant(ctx, g); err != nil {
		return nil, fmt.Errorf("oauth1: store access token: %w", err)
	}
	return url.Values{"oauth_token": {access}, "oauth_token_secret": {newToken()}}, nil
}

// Authenticate checks an API request signed with an access token
// (Authorization: OAuth …) and returns its context carrying the user's
// identity (Source "oauth1").
func (p *Provider) Authenticate(r *http.Request) (context.Context, error) {
	s, err := p.verify(r, true)
	if err != nil {
		return nil, err
	}
	tok := s.oauth["oauth_token"]
	if tok == "" {
		return nil, unauthorized("oauth_token (an access token) is missing")
	}
	ctx := r.Context()
	g, err := p.store.GetOAuth1Grant(ctx, hash(tok))
	if errors.Is(err, pipeline.ErrNotFound) || err == nil && g.ConsumerKey != s.consumer.Key {
		return nil, unauthorized("unknown or revoked access token")
	}
	if err != nil {
		return nil, err
	}
	if err := p.useNonce(ctx, s); err != nil {
		return nil, err
	}
	return auth.WithIdentity(ctx, auth.Identity{UserID: g.UserID, Login: g.Login, Source: Source}), nil
}

// Authenticator verifies a request's credentials; api.Authenticator and
// *auth.Verifier have this shape.
type Authenticator interface {
	Authenticate(r *http.Request) (context.Context, error)
}

// Or authenticates requests with an "Authorization: OAuth" header through
// p and every other request through next (the Bearer verifier). With a
// nil p (no consumers configured) it is next.
func (p *Provider) Or(next Authenticator) Authenticator {
	if p == nil {
		return next
	}
	return either{p, next}
}

type either struct {
	p    *Provider
	next Authenticator
}

func (e either) Authenticate(r *http.Request) (context.Context, error) {
	if hs := r.Header.Values("Authorization"); len(hs) == 1 {
		if scheme, _, _ := strings.Cut(strings.TrimSpace(hs[0]), " "); strings.EqualFold(scheme, "OAuth") {
			return e.p.Authenticate(r)
		}
	}
	return e.next.Authenticate(r)
}

// Application is a consumer a user authorized.
type Application struct {
	Key        string `json:"key" description:"the consumer's key"`
	Name       string `json:"name" description:"the consumer's name"`
	Authorized int64  `json:"authorized" description:"when the user first allowed it (Unix nanoseconds)"`
	Tokens     int    `json:"tokens" description:"access tokens it holds for the user"`
}

// Applications lists the consumers id authorized, by name.
func (p *Provider) Applications(ctx context.Context, id auth.Identity) ([]Application, error) {
	if err := checkUser(id); err != nil {
		return nil, err
	}
	gs, err := p.store.ListOAuth1Grants(ctx, id.UserID)
	if err != nil {
		return nil, err
	}
	by := map[string]*Application{}
	out := []Application{}
	for _, g := range gs {
		c := p.consumers[g.ConsumerKey]
		if c == nil {
			continue // removed by the operator: its tokens do not work
		}
		a := by[g.ConsumerKey]
		if a == nil {
			a = &Application{Key: c.Key, Name: c.Name, Authorized: g.Created}
			by[g.ConsumerKey] = a
		}
		a.Tokens++
		a.Authorized = min(a.Authorized, g.Created)
	}
	for _, a := range by {
		out = append(out, *a)
	}
	slices.SortFunc(out, func(a, b Application) int { return strings.Compare(a.Name+"\x00"+a.Key, b.Name+"\x00"+b.Key) })
	return out, nil
}

// Revoke deletes every access token id gave the consumer key, at once.
func (p *Provider) Revoke(ctx context.Context, id auth.Identity, key string) error {
	if err := checkUser(id); err != nil {
		return err
	}
	n, err := p.store.DeleteOAuth1Grants(ctx, id.UserID, func(g pipeline.OAuth1Grant) bool { return g.ConsumerKey == key })
	if err != nil {
		return err
	}
	if n == 0 {
		return pipeline.Errorf(pipeline.ErrNotFound, "you have not authorized an application %q", key)
	}
	return nil
}
