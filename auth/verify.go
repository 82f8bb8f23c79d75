package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Limits of the verifier.
const (
	// MaxLeeway bounds the clock skew allowed on exp, nbf and iat.
	MaxLeeway = 60 * time.Second
	// DefaultLeeway is used when VerifierConfig.Leeway is zero.
	DefaultLeeway = 30 * time.Second
	// maxTokenLen bounds the size of a token we even try to parse.
	maxTokenLen = 8 << 10
	// maxClaimLen bounds identity strings (user id, jti, kid).
	maxClaimLen = 256
)

// Methods the verifier accepts, one per key source (RFC 8725 §3.1): HS256
// only with the shared secret, RS256 only with keys of the Auth0 JWKS.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
)

// VerifierConfig configures NewVerifier.
type VerifierConfig struct {
	// Secret is the decoded AUTH_SECRET (at least MinSecretLen bytes).
	Secret []byte
	// Auth0Issuer enables RS256 tokens from an Auth0 tenant when not empty
	// (e.g. "https://tenant.auth0.com/"); their iss must equal it exactly.
	Auth0Issuer string
	// Auth0Audience must be one of the aud values of Auth0 tokens; required
	// when Auth0Issuer is set.
	Auth0Audience string
	// JWKSURL is where the tenant's keys are (default
	// {Auth0Issuer}.well-known/jwks.json). https, or http on loopback.
	JWKSURL string
	// HTTPClient fetches the JWKS (default: a client with a 10 s timeout).
	HTTPClient *http.Client
	// Revocations, when set, refuses tokens whose jti was revoked (logout).
	Revocations RevocationStore
	// Leeway for exp, nbf and iat (default DefaultLeeway, at most MaxLeeway).
	Leeway time.Duration
	// Logger receives JWKS refresh failures and, at debug level, why a
	// token was refused (never the token). Default slog.Default().
	Logger *slog.Logger
	// JWKSRefresh is how often the JWKS is re-fetched (default 1 h).
	JWKSRefresh time.Duration
	// JWKSUnknownKIDInterval is the least time between two re-fetches
	// caused by a token naming an unknown kid (default 1 min).
	JWKSUnknownKIDInterval time.Duration
}

// Verifier authenticates user tokens (README, "Authentication"). It is safe for
// concurrent use and keeps no per-request state.
//
// The key source is chosen from the header's alg before anything else, and
// the parser is pinned to that one algorithm: HS256 verifies with the
// shared secret only, RS256 with a key of the configured Auth0 JWKS only.
// "none", HS384/HS512, PS/ES algorithms and anything else are refused.
// Headers that point at or embed keys (jku, jwk, x5u, x5c) or carry crit
// are refused without fetching anything; kid only selects among the keys
// already fetched from the configured JWKS URL. exp is required; nbf and
// iat are checked with a leeway of at most a minute. Tokens the server
// mints for other purposes (typ "stage") use other keys and are refused.
//
// RS256 tokens must have iss equal to the Auth0 issuer and aud containing
// the audience. HS256 tokens' iss and aud are not restricted: only holders
// of the shared secret can mint them (this server with iss "kontinuous",
// scripts/jwt-gen, legacy Auth0 rules with the tenant's iss), and refusing
// the legacy ones would lock out existing clients for no gain. A jti, when
// present, is checked against the revocations (in memory, no round trip).
type Verifier struct {
	secret      []byte
	leeway      time.Duration
	issuer      string
	audience    string
	keys        *jwks // nil when Auth0 is off
	revocations RevocationStore
	revoked     revokedSet
	log         *slog.Logger
	cache       tokenCache
}

// NewVerifier checks cfg and, when Auth0 is on, starts fetching its JWKS
// (a failed first fetch is logged and retried on demand). ctx bounds the
// background JWKS refresh: cancel it when the server stops.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if err := checkSecret(cfg.Secret); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("auth: leeway %s is outside 0..%s", cfg.Leeway, MaxLeeway)
	}
	v := &Verifier{
		secret:      append([]byte(nil), cfg.Secret...),
		leeway:      cfg.Leeway,
		revocations: cfg.Revocations,
		log:         cfg.Logger,
	}
	if cfg.Auth0Issuer == "" {
		return v, nil
	}
	if err := checkURL(cfg.Auth0Issuer); err != nil {
		return nil, fmt.Errorf("auth: auth0-issuer: %w", err)
	}
	if cfg.Auth0Audience == "" {
		return nil, errors.New("auth: auth0-audience is required when auth0-issuer is set")
	}
	if cfg.JWKSURL == "" {
		cfg.JWKSURL = strings.TrimSuffix(cfg.Auth0Issuer, "/") + "/.well-known/jwks.json"
	}
	if err := checkURL(cfg.JWKSURL); err != nil {
		return nil, fmt.Errorf("auth: auth0-jwks-url: %w", err)
	}
	keys, err := newJWKS(ctx, cfg)
	if err != nil {
		return nil, err
	}
	v.issuer, v.audience, v.keys = cfg.Auth0Issuer, cfg.Auth0Audience, keys
	return v, nil
}

// checkURL accepts absolute https URLs, and http ones on loopback hosts.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("%q: http is allowed only for loopback hosts; use https", s)
	}
	return fmt.Errorf("%q: scheme must be https", s)
}

// unauthorized is a 401 with a short reason for the caller.
func unauthorized(reason string) error {
	return pipeline.Errorf(pipeline.ErrUnauthorized, "%s", reason)
}

// Verify checks raw (the compact JWT, without "Bearer ") and returns the
// caller's identity. Errors wrap pipeline.ErrUnauthorized and say briefly
// why ("token expired", "token revoked", "invalid token"...), never which
// key or claim comparison failed in detail, and never include the token.
//
// Accepted tokens are remembered (by their SHA-256) until their exp, for
// at most a minute (see tokenCache); a remembered token is still checked
// against the revocations on every call.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	now := time.Now()
	if raw != "" && len(raw) <= maxTokenLen {
		if id, kid, ok := v.cache.get(raw, now); ok && v.keyStillServed(ctx, id, kid) {
			if v.isRevoked(id.TokenID) {
				err := unauthorized("token revoked")
				v.log.DebugContext(ctx, "auth: token refused", "error", err)
				return Identity{}, err
			}
			return id, nil
		}
	}
	id, kid, err := v.verify(ctx, raw)
	if err != nil {
		v.log.DebugContext(ctx, "auth: token refused", "error", err)
		return Identity{}, err
	}
	v.cache.put(raw, id, kid, now)
	return id, nil
}

// keyStillServed reports whether the key that verified a remembered
// token is still usable: always for the shared secret; for an Auth0
// token, while its kid is in the JWKS (a removed key's tokens go through
// the full check again, and are refused).
func (v *Verifier) keyStillServed(ctx context.Context, id Identity, kid string) bool {
	if id.Source != SourceAuth0 {
		return true
	}
	if v.keys == nil {
		return false
	}
	_, err := v.keys.storage.KeyRead(ctx, kid)
	return err == nil
}

// isRevoked reports whether jti was revoked, here or (through the
// revocation store's watch) on another server.
func (v *Verifier) isRevoked(jti string) bool {
	return jti != "" && (v.revoked.has(jti) || v.revocations != nil && v.revocations.Revoked(jti))
}

// verify checks raw in full; it also returns the kid of an RS256 token.
func (v *Verifier) verify(ctx context.Context, raw string) (Identity, string, error) {
	if raw == "" {
		return Identity{}, "", unauthorized("missing token")
	}
	if len(raw) > maxTokenLen {
		return Identity{}, "", unauthorized("token too large")
	}
	h, err := parseHeader(raw)
	if err != nil {
		return Identity{}, "", fmt.Errorf("%w: %v", unauthorized("malformed token"), err)
	}
	var (
		claims userClaims
		source string
		opts   = []jwt.ParserOption{
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(v.leeway),
			jwt.WithStrictDecoding(),
		}
		keyfunc jwt.Keyfunc
	)
	switch h.Alg {
	case algHS256:
		source = SourceSecret
		opts = append(opts, jwt.WithValidMethods([]string{algHS256}))
		keyfunc = func(*jwt.Token) (any, error) { return v.secret, nil }
	case algRS256:
		if v.keys == nil {
			return Identity{}, "", unauthorized("RS256 tokens are not accepted: Auth0 is not configured")
		}
		source = SourceAuth0
		opts = append(opts, jwt.WithValidMethods([]string{algRS256}),
			jwt.WithIssuer(v.issuer), jwt.WithAudience(v.audience))
		keyfunc = v.keys.keyfunc(ctx, h.Kid)
	default:
		return Identity{}, "", unauthorized("token algorithm not accepted")
	}
	if _, err := jwt.NewParser(opts...).ParseWithClaims(raw, &claims, keyfunc); err != nil {
		return Identity{}, "", fmt.Errorf("%w: %v", unauthorized(refusal(err)), err)
	}
	id, err := v.identity(&claims, source)
	return id, h.Kid, err
}

// refusal is the short reason shown for a jwt parse error.
func refusal(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	}
	return "invalid token"
}

// identity turns verified claims into an Identity.
func (v *Verifier) identity(c *userClaims, source string) (Identity, error) {
	if c.Typ != "" && c.Typ != typUser {
		return Identity{}, unauthorized("not a user token")
	}
	uid := c.UserID
	if uid == "" {
		uid = c.Subject
	}
	if uid == "" {
		return Identity{}, unauthorized("token names no user")
	}
	// A user id is a key segment where users are stored: no '/'.
	if !cleanClaim(uid) || strings.ContainsRune(uid, '/') || (c.ID != "" && !cleanClaim(c.ID)) {
		return Identity{}, unauthorized("malformed token")
	}
	if v.isRevoked(c.ID) {
		return Identity{}, unauthorized("token revoked")
	}
	login := c.Nickname
	if login == "" {
		login = c.Name
	}
	id := Identity{
		UserID:  uid,
		Login:   login,
		TokenID: c.ID,
		Expires: c.ExpiresAt.Time,
		Source:  source,
	}
	if len(c.Identities) > 0 && (c.Identities[0].Provider == "" || c.Identities[0].Provider == "github") {
		id.GitHubToken = c.Identities[0].AccessToken
	}
	return id, nil
}

// cleanClaim accepts short strings of printable characters.
func cleanClaim(s string) bool {
	if s == "" || len(s) > maxClaimLen {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// header is the part of a JOSE header the verifier looks at.
type header struct {
	Alg string
	Kid string
}

// refusedHeaders point at or embed keys (RFC 8725 §3.10: never let the
// token choose its own key) or demand extensions we do not implement.
var refusedHeaders = []string{"jku", "jwk", "x5u", "x5c", "crit", "b64"}

// acceptedTyps are the header typ values of user tokens (case-insensitive;
// absent is fine). Stage tokens use "kontinuous-stage+jwt".
var acceptedTyps = []string{"jwt", "at+jwt", "application/at+jwt"}

// parseHeader decodes and screens the JOSE header before any key is chosen.
func parseHeader(raw string) (header, error) {
	if strings.Count(raw, ".") != 2 {
		return header{}, errors.New("not three segments")
	}
	seg, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return header{}, errors.New("header is not base64url")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return header{}, errors.New("header is not a JSON object")
	}
	for _, k := range refusedHeaders {
		if _, ok := m[k]; ok {
			return header{}, fmt.Errorf("header parameter %q is not accepted", k)
		}
	}
	var h header
	if err := json.Unmarshal(m["alg"], &h.Alg); err != nil || h.Alg == "" {
		return header{}, errors.New("header has no alg")
	}
	if raw, ok := m["kid"]; ok {
		if err := json.Unmarshal(raw, &h.Kid); err != nil || !cleanClaim(h.Kid) {
			return header{}, errors.New("header kid is not a short string")
		}
	}
	if raw, ok := m["typ"]; ok {
		var typ string
		if err := json.Unmarshal(raw, &typ); err != nil || !containsFold(acceptedTyps, typ) {
			return header{}, errors.New("header typ is not a user token type")
		}
	}
	return h, nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// Authenticate verifies the Bearer token of r and returns r's context
// carrying the caller's Identity (it implements api.Authenticator). The
// scheme is case-insensitive. A token in the query string (access_token,
// id_token) is refused, and its value is replaced by "REDACTED" in r.URL and
// r.RequestURI so that nothing downstream can log it.
func (v *Verifier) Authenticate(r *http.Request) (context.Context, error) {
	if redactQueryTokens(r) {
		return nil, unauthorized("tokens are not accepted in the URL; send Authorization: Bearer <token>")
	}
	hs := r.Header.Values("Authorization")
	switch len(hs) {
	case 0:
		return nil, unauthorized("missing Authorization: Bearer <token>")
	case 1:
	default:
		return nil, unauthorized("more than one Authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(hs[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, unauthorized("Authorization must use the Bearer scheme")
	}
	id, err := v.Verify(r.Context(), strings.TrimSpace(tok))
	if err != nil {
		return nil, err
	}
	return WithIdentity(r.Context(), id), nil
}

// queryTokenParams are query parameters clients have used to pass tokens.
var queryTokenParams = []string{"access_token", "id_token"}

// redactQueryTokens reports whether r's query carries a token parameter,
// and if so blanks its values in r.URL and r.RequestURI.
func redactQueryTokens(r *http.Request) bool {
	if r.URL == nil || r.URL.RawQuery == "" {
		return false
	}
	vals, err := url.ParseQuery(r.URL.RawQuery)
	found := false
	for _, p := range queryTokenParams {
		if _, ok := vals[p]; ok {
			found = true
			vals[p] = []string{"REDACTED"}
		}
	}
	if err != nil {
		// ParseQuery stops at the first bad pair; look at the raw pairs so
		// that a token cannot hide behind a malformed one.
		for _, pair := range strings.FieldsFunc(r.URL.RawQuery, func(c rune) bool { return c == '&' || c == ';' }) {
			k, _, _ := strings.Cut(pair, "=")
			if k, kerr := url.QueryUnescape(k); kerr == nil && slices.Contains(queryTokenParams, k) {
				found = true
			}
		}
	}
	if !found {
		return false
	}
	if err != nil {
		r.URL.RawQuery = "REDACTED"
	} else {
		r.URL.RawQuery = vals.Encode()
	}
	r.RequestURI = r.URL.RequestURI()
	return true
}

// Revoke refuses id's token from now until it expires (logout). Tokens
// without a jti cannot be revoked (ErrInvalid). The revocation is recorded
// in the RevocationStore (shared by every server instance) and, at once, in
// this verifier's memory.
func (v *Verifier) Revoke(ctx context.Context, id Identity) error {
	if id.TokenID == "" {
		return pipeline.Errorf(pipeline.ErrInvalid, "this token has no id (jti) and cannot be revoked; it expires at %s", id.Expires.UTC().Format(time.RFC3339))
	}
	if v.revocations == nil {
		return pipeline.Errorf(pipeline.ErrNotImplemented, "token revocation is not configured")
	}
	v.revoked.add(id.TokenID, id.Expires)
	v.cache.forget(id.TokenID)
	if err := v.revocations.Revoke(ctx, id.TokenID, id.Expires); err != nil {
		return fmt.Errorf("auth: revoke token: %w", err)
	}
	return nil
}

// revokedSet remembers revocations made through this verifier until the
// tokens expire, so a logout takes effect here before the store's watch
// catches up.
type revokedSet struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (s *revokedSet) add(jti string, exp time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]time.Time{}
	}
	now := time.Now()
	for k, e := range s.m {
		if now.After(e.Add(MaxLeeway)) {
			delete(s.m, k)
		}
	}
	s.m[jti] = exp
}

func (s *revokedSet) has(jti string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[jti]
	return ok
}
