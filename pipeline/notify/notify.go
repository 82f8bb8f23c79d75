// Package notify carries a build's news out of the server: commit statuses
// to the forge, in order per build and retried, and Slack messages, over
// an HTTP client that (unless told otherwise) only speaks HTTPS to public
// addresses and follows no redirects. It implements pipeline.Notifier.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Config configures a Notifier.
type Config struct {
	// Client posts Slack messages (default: Client(false)).
	Client *http.Client
	// Logger gets the statuses that could not be posted (default: discard).
	Logger *slog.Logger
	// Retry is the first retry delay of a commit status, doubled on each
	// of the 4 retries (default 500ms).
	Retry time.Duration
	// Idle is how long a build's status queue lives without work (default 30s).
	Idle time.Duration
}

// Notifier implements pipeline.Notifier.
type Notifier struct {
	cfg    Config
	mu     sync.Mutex
	queues map[string]chan func(context.Context) error
	wg     sync.WaitGroup
}

var _ pipeline.Notifier = (*Notifier)(nil)

// New returns a Notifier.
func New(cfg Config) *Notifier {
	if cfg.Client == nil {
		cfg.Client = Client(false)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 500 * time.Millisecond
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	return &Notifier{cfg: cfg, queues: map[string]chan func(context.Context) error{}}
}

// CommitStatus queues post behind the statuses queued before it for the
// same build and returns at once; a full queue (64) drops post. Each post
// is tried up to 5 times with backoff, 10 s each; when base ends, the
// queue stops.
func (n *Notifier) CommitStatus(base context.Context, build string, post func(context.Context) error) {
	n.mu.Lock()
	q, ok := n.queues[build]
	if !ok {
		q = make(chan func(context.Context) error, 64)
		n.queues[build] = q
		n.wg.Add(1)
		go n.drain(base, build, q)
	}
	n.mu.Unlock()
	select {
	case q <- post:
	default:
		n.cfg.Logger.Warn("commit status queue full; dropping a status", "build", build)
	}
}

func (n *Notifier) drain(base context.Context, build string, q chan func(context.Context) error) {
	defer n.wg.Done()
	for {
		select {
		case post := <-q:
			n.postWithRetries(base, build, post)
		case <-time.After(n.cfg.Idle):
			n.mu.Lock()
			if len(q) == 0 {
				delete(n.queues, build)
				n.mu.Unlock()
				return
			}
			n.mu.Unlock()
		case <-base.Done():
			return
		}
	}
}

func (n *Notifier) postWithRetries(base context.Context, build string, post func(context.Context) error) {
	backoff := n.cfg.Retry
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(base, 10*time.Second)
		err := post(ctx)
		cancel()
		if err == nil || attempt == 5 || base.Err() != nil {
			if err != nil {
				n.cfg.Logger.Warn("commit status not posted", "build", build, "error", err.Error())
			}
			return
		}
		select {
		case <-time.After(backoff):
		case <-base.Done():
		}
		backoff *= 2
	}
}

// Wait waits for the status queues whose base has ended, or for ctx.
func (n *Notifier) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Slack posts msg to a Slack incoming webhook. The URL is a secret: no
// error names it.
func (n *Notifier) Slack(ctx context.Context, url string, msg pipeline.SlackMessage) error {
	m := map[string]any{"text": msg.Text}
	if msg.Channel != "" {
		m["channel"] = msg.Channel
	}
	if msg.Username != "" {
		m["username"] = msg.Username
	}
	body, _ := json.Marshal(m) // a map of strings always marshals
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return errors.New("bad slackurl")
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		// The error text holds the URL.
		return errors.New("not sent")
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) // drain for reuse
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("refused with status %d", resp.StatusCode)
	}
	return nil
}
