package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// errAnswered: the reply has been written already.
var errAnswered = errors.New("answered")

// Body read limits: a client that stalls or trickles its body is cut off.
var (
	// BodyIdleTimeout is the longest a single read of a request body may
	// wait for bytes (a variable so that tests can shorten it).
	BodyIdleTimeout = 10 * time.Second
	// bodyGrace and bodyMinRate bound a whole body's read: it must arrive
	// within bodyGrace plus its length at bodyMinRate bytes per second.
	bodyGrace   = 20 * time.Second
	bodyMinRate = int64(256 << 10)
)

// readDeadlineBody sets the connection's read deadline before each read of
// a request body: at most BodyIdleTimeout from now and never past the
// whole body's deadline. At EOF (or on close) the deadline is cleared so
// that reads after the body (the server's own connection watch) are not
// cut.
type readDeadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	total time.Time
	done  bool
}

// withReadDeadlines wraps r's body; limit is the most it may carry.
func withReadDeadlines(w http.ResponseWriter, r *http.Request, limit int64) io.ReadCloser {
	n := r.ContentLength
	if n < 0 || n > limit {
		n = limit
	}
	total := time.Now().Add(bodyGrace + time.Duration(n/bodyMinRate)*time.Second)
	return &readDeadlineBody{ReadCloser: r.Body, rc: http.NewResponseController(w), total: total}
}

func (b *readDeadlineBody) Read(p []byte) (int, error) {
	if !b.done {
		d := time.Now().Add(BodyIdleTimeout)
		if d.After(b.total) {
			d = b.total
		}
		// Best effort: a writer without deadlines (tests' recorders)
		// still reads.
		_ = b.rc.SetReadDeadline(d)
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.clear()
	}
	return n, err
}

func (b *readDeadlineBody) Close() error {
	b.clear()
	return b.ReadCloser.Close()
}

// bound limits the server's own reads after the handler (discarding an
// unread body) to BodyIdleTimeout.
func (b *readDeadlineBody) bound() {
	if !b.done {
		_ = b.rc.SetReadDeadline(time.Now().Add(BodyIdleTimeout))
	}
}

func (b *readDeadlineBody) clear() {
	if !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}

// byteBudget bounds the bytes of webhook bodies held in memory at once.
type byteBudget struct {
	mu      sync.Mutex
	free    int64
	changed chan struct{} // closed and replaced on every release
}

func newByteBudget(n int64) *byteBudget {
	return &byteBudget{free: n, changed: make(chan struct{})}
}

// acquire takes n bytes of the budget, waiting until ctx ends; false if
// it could not.
func (b *byteBudget) acquire(ctx context.Context, n int64) bool {
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return true
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.free += n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// Webhook body budget: deliveries being read share WebhookBodyBudget
// bytes; one that finds no room within webhookBudgetWait is answered 503
// with Retry-After.
var (
	// WebhookBodyBudget is how many bytes of webhook bodies are held at
	// once (a little over one delivery of GitHub's 25 MiB maximum).
	WebhookBodyBudget int64 = MaxWebhookBody + 7<<20
	webhookBudgetWait       = 5 * time.Second
)

// Pooled webhook body buffers. A delivery's body is read into a buffer of
// the smallest class that holds it (powers of two from 64 KiB to 16 MiB,
// then MaxWebhookBody) and the budget is charged that class's size, so
// the budget bounds the buffers really held. Buffers are reused (a flood
// of large deliveries allocates a few buffers, not one per delivery, so
// the heap does not fill with garbage between collections); sync.Pool
// lets the collector drop them when the server is idle.
const (
	minBodyClassShift = 16 // 64 KiB
	maxBodyClassShift = 24 // 16 MiB; larger bodies get MaxWebhookBody
)

var bodyPools [maxBodyClassShift - minBodyClassShift + 2]sync.Pool

// bodyClass is the pool index and buffer capacity for an n-byte body.
func bodyClass(n int64) (int, int64) {
	for i := 0; i <= maxBodyClassShift-minBodyClassShift; i++ {
		if c := int64(1) << (minBodyClassShift + i); n <= c {
			return i, c
		}
	}
	return len(bodyPools) - 1, MaxWebhookBody
}

// getBodyBuffer returns a pooled buffer of class i (capacity c).
func getBodyBuffer(i int, c int64) *[]byte {
	if p, ok := bodyPools[i].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, c)
	return &b
}

// readWebhookBody reads a delivery's body only once everything that can
// be known without it is: the headers' shape (signature, delivery id: the
// forge's Delivery checked them into headerErr; Content-Length within the
// cap) and that the pipeline exists. Then it waits briefly for room in the
// webhook body budget (503 with Retry-After when there is none) and reads
// exactly Content-Length bytes into a pooled buffer, with the read
// deadlines every body gets. The caller must call release once it no
// longer uses the body (nothing may keep a reference to it): the budget
// covers the body for as long as it is held, not only while it is read.
func (r *BuildResources) readWebhookBody(req *restful.Request, resp *restful.Response, owner, repo string, headerErr error) (body []byte, release func(), err error) {
	hr := req.Request
	if headerErr != nil {
		// The forge's Delivery found the signature or delivery id
		// missing or malformed.
		return nil, nil, headerErr
	}
	n := hr.ContentLength
	if n < 0 {
		writeStatus(resp, http.StatusLengthRequired, "a webhook delivery needs a Content-Length")
		return nil, nil, errAnswered
	}
	if n > MaxWebhookBody {
		return nil, nil, &http.MaxBytesError{Limit: MaxWebhookBody}
	}
	if err := r.svc.WebhookTarget(hr.Context(), owner, repo); err != nil {
		return nil, nil, err
	}
	class, size := bodyClass(n)
	wctx, cancel := context.WithTimeout(hr.Context(), webhookBudgetWait)
	ok := r.webhookBodies.acquire(wctx, size)
	cancel()
	if !ok {
		return nil, nil, pipeline.Errorf(pipeline.ErrUnavailable, "too many webhook deliveries being read at once; retry later")
	}
	buf := getBodyBuffer(class, size)
	release = func() {
		bodyPools[class].Put(buf)
		r.webhookBodies.release(size)
	}
	body = (*buf)[:n]
	if _, err := io.ReadFull(hr.Body, body); err != nil {
		release()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, err
		}
		return nil, nil, pipeline.Invalid("body", "could not read the request body (%d bytes announced)", n)
	}
	return body, release, nil
}
