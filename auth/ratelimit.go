package auth

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Login rate limit defaults: per client, a burst of LoginBurst attempts,
// then one every 2 s (30 a minute sustained).
const (
	LoginRate       = rate.Limit(30.0 / 60.0)
	LoginBurst      = 10
	LoginMaxClients = 10000
)

// LimiterConfig configures NewLimiter.
type LimiterConfig struct {
	// Rate is the sustained rate per client (default LoginRate).
	Rate rate.Limit
	// Burst is how many attempts a client may make at once (default LoginBurst).
	Burst int
	// MaxClients bounds the clients tracked (default LoginMaxClients).
	MaxClients int
}

// Limiter is a per-client token-bucket rate limiter with a bounded memory:
// when MaxClients are tracked, clients idle long enough to have a full
// bucket again are dropped first, then the least recently seen.
type Limiter struct {
	rate  rate.Limit
	burst int
	max   int
	idle  time.Duration // time to refill a whole bucket

	mu      sync.Mutex
	clients map[string]*client
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewLimiter returns a Limiter with cfg's limits (defaults filled).
func NewLimiter(cfg LimiterConfig) *Limiter {
	if cfg.Rate <= 0 {
		cfg.Rate = LoginRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = LoginBurst
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = LoginMaxClients
	}
	return &Limiter{
		rate:    cfg.Rate,
		burst:   cfg.Burst,
		max:     cfg.MaxClients,
		idle:    time.Duration(float64(cfg.Burst) / float64(cfg.Rate) * float64(time.Second)),
		clients: map[string]*client{},
	}
}

// Allow takes one attempt from key's bucket. When none is left it returns
// false and how long until the next attempt is allowed.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.clients[key]
	if !ok {
		if len(l.clients) >= l.max {
			l.evict(now)
		}
		c = &client{lim: rate.NewLimiter(l.rate, l.burst)}
		l.clients[key] = c
	}
	c.seen = now
	r := c.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// evict frees room: idle clients first, else the least recently seen.
func (l *Limiter) evict(now time.Time) {
	for k, c := range l.clients {
		if now.Sub(c.seen) >= l.idle {
			delete(l.clients, k)
		}
	}
	if len(l.clients) < l.max {
		return
	}
	oldest, at := "", time.Time{}
	for k, c := range l.clients {
		if oldest == "" || c.seen.Before(at) {
			oldest, at = k, c.seen
		}
	}
	delete(l.clients, oldest)
}

// RetryAfterSeconds rounds d up to whole seconds (at least 1) for a
// Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
