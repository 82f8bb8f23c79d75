package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Default caps of live streams (followed logs and builds).
const (
	DefaultMaxStreamsPerUser = 20
	DefaultMaxStreams        = 1000
)

// streamRetryAfter is the Retry-After (seconds) of a refused stream.
const streamRetryAfter = "10"

// streamLimits bounds the live streams open at once, per caller and in
// total (README, live streams): each holds goroutines, a connection and buffers.
type streamLimits struct {
	mu      sync.Mutex
	perUser int
	total   int
	open    int
	byUser  map[string]int
}

func newStreamLimits(perUser, total int) *streamLimits {
	return &streamLimits{perUser: perUser, total: total, byUser: map[string]int{}}
}

func (l *streamLimits) set(perUser, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if perUser > 0 {
		l.perUser = perUser
	}
	if total > 0 {
		l.total = total
	}
}

// acquire takes a slot for user; release gives it back.
func (l *streamLimits) acquire(user string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byUser[user] >= l.perUser {
		return nil, pipeline.Errorf(pipeline.ErrRateLimited, "too many live streams: at most %d per user at once; close one and retry", l.perUser)
	}
	if l.open >= l.total {
		return nil, pipeline.Errorf(pipeline.ErrRateLimited, "too many live streams on this server (%d); retry later", l.total)
	}
	l.open++
	l.byUser[user]++
	return sync.OnceFunc(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.open--
		if l.byUser[user]--; l.byUser[user] <= 0 {
			delete(l.byUser, user)
		}
	}), nil
}

// SetStreamLimits sets the caps of live streams per caller and in total
// (0 keeps the current value; defaults DefaultMaxStreamsPerUser and
// DefaultMaxStreams).
func (r *BuildResources) SetStreamLimits(perUser, total int) { r.limits().set(perUser, total) }

func (r *BuildResources) limits() *streamLimits {
	r.limitsOnce.Do(func() {
		if r.streamLimits == nil {
			r.streamLimits = newStreamLimits(DefaultMaxStreamsPerUser, DefaultMaxStreams)
		}
	})
	return r.streamLimits
}

// openStream takes a stream slot for c, answering 429 with Retry-After
// when none is left (ok=false: the reply is written).
func (r *BuildResources) openStream(req *restful.Request, resp *restful.Response, c pipeline.Caller) (func(), bool) {
	release, err := r.limits().acquire(c.UserID)
	if err != nil {
		resp.Header().Set("Retry-After", streamRetryAfter)
		writeError(req, resp, err)
		return nil, false
	}
	return release, true
}

// wantsStream: ?follow=true with Accept: text/event-stream.
func wantsStream(req *restful.Request) bool {
	f := req.QueryParameter("follow")
	return (f == "true" || f == "yes") && strings.Contains(req.HeaderParameter("Accept"), "text/event-stream")
}

// sseStream writes server-sent events with keep-alive comments; its
// methods are safe for concurrent use.
type sseStream struct {
	mu   sync.Mutex
	w    *bufio.Writer
	rc   *http.ResponseController
	stop chan struct{}
	done sync.WaitGroup
}

// startSSE commits the reply to an event stream.
func startSSE(ctx context.Context, resp *restful.Response) *sseStream {
	h := resp.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	resp.WriteHeader(http.StatusOK)
	s := &sseStream{w: bufio.NewWriter(resp), rc: http.NewResponseController(resp.ResponseWriter), stop: make(chan struct{})}
	_ = s.rc.Flush() // best effort: a writer that cannot flush still works
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(sseKeepAlive)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				// A comment keeps proxies from closing a quiet stream.
				_ = s.send("", nil, ": keep-alive\n\n")
			}
		}
	}()
	return s
}

// send writes one event (event "" is the default "message" event) and
// flushes it.
func (s *sseStream) send(event string, data []byte, raw string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if raw != "" {
		s.w.WriteString(raw)
	} else {
		if event != "" {
			fmt.Fprintf(s.w, "event: %s\n", event)
		}
		// JSON has no raw newlines; one data line.
		s.w.WriteString("data: ")
		s.w.Write(data)
		s.w.WriteString("\n\n")
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	return s.rc.Flush()
}

// end stops the keep-alives and writes the last event: the writer is not
// usable once the handler returns.
func (s *sseStream) end(event, data string) {
	close(s.stop)
	s.done.Wait()
	_ = s.send(event, []byte(data), "") // the client may be gone
}

// followBuilds serves ?follow=true on the build list (number 0) or one
// build: the current state, then every change, as SSE.
func (r *BuildResources) followBuilds(req *restful.Request, resp *restful.Response, number int) {
	owner, repo, err := repoPath(req)
	limit := 50
	if err == nil && number == 0 {
		limit, _, err = paging(req)
	}
	var c pipeline.Caller
	if err == nil {
		c, err = r.caller(req)
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	ctx := req.Request.Context()
	// Check access and existence before committing to a stream.
	if number > 0 {
		_, err = r.svc.GetBuild(ctx, c, owner, repo, number)
	} else {
		_, err = r.svc.ListBuilds(ctx, c, owner, repo, 1, 0)
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	release, ok := r.openStream(req, resp, c)
	if !ok {
		return
	}
	defer release()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnShutdown := context.AfterFunc(r.streams, cancel)
	defer stopOnShutdown()
	s := startSSE(sctx, resp)
	err = r.svc.FollowBuilds(sctx, c, owner, repo, number, limit, func(ev pipeline.BuildEvent) error {
		if ev.Deleted {
			data, _ := json.Marshal(struct {
				Number int `json:"number"`
			}{ev.Build.Number}) // cannot fail
			return s.send("delete", data, "")
		}
		var data []byte
		var err error
		if number > 0 {
			data, err = json.Marshal(ev.Build)
		} else {
			data, err = r.lists.of(&ev.Build)
		}
		if err != nil {
			return err
		}
		return s.send("", data, "")
	})
	switch {
	case ctx.Err() == nil && r.streams.Err() != nil:
		s.end("end", "server shutting down; reconnect to follow on")
	case err != nil && ctx.Err() == nil:
		s.end("error", pipeline.PublicMessage(err))
	default:
		s.end("end", "stream ended")
	}
}
