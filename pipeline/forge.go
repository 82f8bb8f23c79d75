package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Forge is a code host (GitHub, Bitbucket, ...) as Kontinuous needs it: a
// forge package (pipeline/forge/<name>) implements it completely, so that
// nothing outside that package knows the forge's headers, signatures,
// OAuth endpoints, name rules or clone user. The API layer, auth, the
// engine and the executors speak only to this port.
type Forge interface {
	// SCM is the repository, permission, file, status, hook and key calls
	// and webhook verification (ParseWebhook). Name is the forge's id and
	// the prefix of its users' ids ("<name>|<numeric id>").
	SCM
	// ForgeOAuth is the forge's OAuth login.
	ForgeOAuth
	// Delivery reads a webhook delivery's headers, never its body: ok is
	// false when r is not a delivery of this forge (it carries none of the
	// forge's event headers). When ok, the returned request has Event,
	// Delivery and Signature set (Body is left for the caller to read)
	// and err says, in the contract's shape, what is wrong with the
	// headers: a missing or malformed signature is ErrUnauthorized (the
	// message a wrong signature gets), a missing delivery id ErrInvalid.
	Delivery(r *http.Request) (req WebhookRequest, ok bool, err error)
	// ValidateRepoName applies the forge's rules for owner and repository
	// names (ErrInvalid naming the field).
	ValidateRepoName(owner, repo string) error
	// CloneCredentials are the basic-auth user and password with which an
	// executor clones over HTTPS as the holder of tok.
	CloneCredentials(tok ForgeToken) (user, password string)
	// WebhookHeaders documents the headers of the forge's deliveries (for
	// the API's Swagger).
	WebhookHeaders() []WebhookHeader
}

// WebhookHeader is one header of a forge's webhook deliveries.
type WebhookHeader struct {
	Name, Description string
}

// ForgeOAuth is a forge's OAuth web login. Errors: ErrNotImplemented when
// the server has no OAuth client for the forge, ErrUnauthorized for a
// bad, spent or expired code or refresh token, ErrUpstream when the forge
// fails. No error carries a code, token or client secret.
type ForgeOAuth interface {
	// Name is the identity prefix of the forge's users ("<name>|<id>").
	Name() string
	// OAuthConfigured is nil when the server has the forge's OAuth client.
	OAuthConfigured() error
	// AuthorizeURL is where a browser starts the login, with state and
	// redirectURI ("" = the OAuth app's own callback).
	AuthorizeURL(state, redirectURI string) (string, error)
	// Exchange trades the code the forge sent back for the user's token.
	Exchange(ctx context.Context, code, state, redirectURI string) (ForgeToken, error)
	// Refresh returns a new token for tok when tok can be refreshed
	// (it has a RefreshToken); the forge may rotate the refresh token.
	Refresh(ctx context.Context, tok ForgeToken) (ForgeToken, error)
}

// Forges is the registry of the forges a server talks to, by name. The
// first registered is the default: pipelines and users without a forge
// prefix belong to it. It is safe for concurrent use.
type Forges struct {
	mu     sync.RWMutex
	byName map[string]Forge
	order  []string
}

// NewForges returns a registry holding fs (nil entries are skipped).
func NewForges(fs ...Forge) *Forges {
	r := &Forges{byName: map[string]Forge{}}
	for _, f := range fs {
		if f != nil {
			r.Register(f)
		}
	}
	return r
}

// Register adds f under f.Name(), replacing a forge of the same name.
func (r *Forges) Register(f Forge) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := f.Name()
	if _, ok := r.byName[n]; !ok {
		r.order = append(r.order, n)
	}
	r.byName[n] = f
}

// Get returns the forge called name.
func (r *Forges) Get(name string) (Forge, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.byName[name]
	return f, ok
}

// Names lists the registered forges, the default first.
func (r *Forges) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.order)
}

// Default is the first registered forge (nil when there is none).
func (r *Forges) Default() Forge {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.order) == 0 {
		return nil
	}
	return r.byName[r.order[0]]
}

// ForUser returns the forge a user id ("<forge>|<id>") belongs to.
func (r *Forges) ForUser(userID string) (Forge, bool) {
	name, _, ok := strings.Cut(userID, "|")
	if !ok {
		return nil, false
	}
	return r.Get(name)
}

// Delivery finds the forge whose webhook r is and reads its headers (see
// Forge.Delivery). ok is false when no registered forge claims r.
func (r *Forges) Delivery(hr *http.Request) (Forge, WebhookRequest, bool, error) {
	r.mu.RLock()
	fs := make([]Forge, 0, len(r.order))
	for _, n := range r.order {
		fs = append(fs, r.byName[n])
	}
	r.mu.RUnlock()
	for _, f := range fs {
		if req, ok, err := f.Delivery(hr); ok {
			req.Forge = f.Name()
			return f, req, true, err
		}
	}
	return nil, WebhookRequest{}, false, nil
}

// UserStore reads and writes users (Store satisfies it).
type UserStore interface {
	GetUser(ctx context.Context, id string) (User, error)
	PutUser(ctx context.Context, u User) error
}

// refreshMargin: a token this close to its expiry is refreshed.
const refreshMargin = time.Minute

// FreshToken returns u's forge token, refreshed through f and stored
// when it expires within a minute and carries a refresh token. A token
// without expiry (GitHub OAuth apps) or without a refresh token is
// returned as is.
//
// At most one refresh per user runs at a time, in this process and, when
// users is a UserLocker (the etcd store), across every server: forges
// such as Bitbucket rotate the refresh token on every use, so a second
// concurrent refresh with the same (now spent) token would be refused.
// A caller that waited re-reads the user and takes the pair the first one
// stored. The new pair is stored before the lock is released. A refused
// refresh (the forge's invalid_grant) marks the connection expired (the
// stored tokens are dropped) and is ErrUnauthorized saying to reconnect
// through /api/v1/login/{forge}/authorize. A user no longer stored when
// the lock is taken (the connection was removed meanwhile) is
// ErrUnauthorized too, and nothing is stored.
func FreshToken(ctx context.Context, f ForgeOAuth, users UserStore, u User) (ForgeToken, error) {
	if u.Token.Expired && f != nil {
		return ForgeToken{}, expiredError(f, u)
	}
	if !needsRefresh(u.Token) || f == nil {
		return u.Token, nil
	}
	mu := refreshLock(u.ID)
	mu.Lock()
	defer mu.Unlock()
	// Other servers sharing the store refresh the same user too: a store
	// that can lock a user across them (etcd) serializes the whole
	// read-refresh-store, so exactly one of them spends the refresh token.
	if l, ok := users.(UserLocker); ok {
		unlock, err := l.LockUser(ctx, u.ID)
		if err != nil {
			return ForgeToken{}, fmt.Errorf("lock the forge connection of %s: %w", u.ID, err)
		}
		defer unlock()
	}
	cur, err := users.GetUser(ctx, u.ID)
	switch {
	case err == nil:
		if cur.Token.Expired {
			return ForgeToken{}, expiredError(f, cur)
		}
		if !needsRefresh(cur.Token) {
			return cur.Token, nil // another caller refreshed meanwhile
		}
		if cur.Token.Valid() {
			u = cur
		}
	case errors.Is(err, ErrNotFound):
		// The connection was removed (Service.Disconnect) since u was
		// read: refreshing would store its tokens again.
		return ForgeToken{}, Errorf(ErrUnauthorized, "the %s connection of %s was removed; connect it again through /api/v1/login/%s/authorize", f.Name(), u.Login, f.Name())
	}
	tok := u.Token
	nt, err := f.Refresh(ctx, tok)
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			u.Token.Expired, u.Updated = true, Now()
			if perr := users.PutUser(context.WithoutCancel(ctx), u); perr != nil {
				return ForgeToken{}, fmt.Errorf("store the expired connection of %s: %w", u.ID, perr)
			}
			return ForgeToken{}, expiredError(f, u)
		}
		return ForgeToken{}, fmt.Errorf("refresh the forge token of %s: %w", u.ID, err)
	}
	if nt.RefreshToken == "" {
		nt.RefreshToken = tok.RefreshToken
	}
	u.Token, u.Updated = nt, Now()
	// The old refresh token is spent: the new pair must be stored even if
	// the request that asked for it has ended.
	if err := users.PutUser(context.WithoutCancel(ctx), u); err != nil {
		return ForgeToken{}, fmt.Errorf("store the refreshed token of %s: %w", u.ID, err)
	}
	return nt, nil
}

// expiredError is the 401 of a connection the forge refused to refresh.
func expiredError(f ForgeOAuth, u User) error {
	return Errorf(ErrUnauthorized, "the %s connection of %s expired; reconnect through /api/v1/login/%s/authorize", f.Name(), u.Login, f.Name())
}

// ConnectionStatus is "expired" for a token the forge refused to refresh
// (or an expired one that cannot be refreshed) and "connected" otherwise.
func ConnectionStatus(tok ForgeToken) string {
	if tok.Expired || !tok.Valid() || (!tok.Expiry.IsZero() && tok.RefreshToken == "" && time.Now().After(tok.Expiry)) {
		return "expired"
	}
	return "connected"
}

func needsRefresh(tok ForgeToken) bool {
	return !tok.Expiry.IsZero() && tok.RefreshToken != "" && time.Until(tok.Expiry) <= refreshMargin
}

// refreshLocks holds one mutex per user id (users are few; entries stay).
var refreshLocks sync.Map

func refreshLock(id string) *sync.Mutex {
	m, _ := refreshLocks.LoadOrStore(id, &sync.Mutex{})
	return m.(*sync.Mutex)
}
