package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// maxLine is the longest line written to a stage log in one piece; longer
// lines are split.
const maxLine = 64 << 10

// lineWriter writes whole lines to a stage log, one Write per line, from
// any goroutine.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// line writes b followed by a newline.
func (l *lineWriter) line(b []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	buf := make([]byte, 0, len(b)+1)
	buf = append(append(buf, b...), '\n')
	_, err := l.w.Write(buf)
	return err
}

// streamer follows the logs of one pod's containers in order (init
// containers, then the stage) into a stage log. It starts a container's
// stream when the container has started, and resumes a broken stream from
// the last timestamp it saw, so lines are neither lost nor repeated.
type streamer struct {
	client kubernetes.Interface
	ns     string
	pod    string
	out    *lineWriter
	log    *slog.Logger

	mu     sync.Mutex
	latest *corev1.Pod
	poke   chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newStreamer(client kubernetes.Interface, ns string, pod *corev1.Pod, out *lineWriter, log *slog.Logger) *streamer {
	ctx, cancel := context.WithCancel(context.Background())
	s := &streamer{client: client, ns: ns, pod: pod.Name, out: out, log: log, latest: pod,
		poke: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go s.loop()
	return s
}

// update hands the streamer the pod's latest state.
func (s *streamer) update(p *corev1.Pod) {
	s.mu.Lock()
	s.latest = p
	s.mu.Unlock()
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// stop ends the stream now and waits for it.
func (s *streamer) stop() {
	s.cancel()
	<-s.done
}

// finish waits up to grace for the stream to reach the end of the last
// container's output, then stops it.
func (s *streamer) finish(ctx context.Context, grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
	case <-ctx.Done():
	}
	s.stop()
}

func (s *streamer) current() *corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest
}

func (s *streamer) loop() {
	defer close(s.done)
	p := s.current()
	var names []string
	for _, c := range p.Spec.InitContainers {
		names = append(names, c.Name)
	}
	for _, c := range p.Spec.Containers {
		names = append(names, c.Name)
	}
	for _, name := range names {
		// Wait for the container to start; give up on it when the pod
		// ended without starting it (an earlier container failed).
		for {
			p = s.current()
			st, ok := containerState(p, name)
			if ok && (st.Running != nil || st.Terminated != nil) {
				break
			}
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				return
			}
			select {
			case <-s.ctx.Done():
				return
			case <-s.poke:
			}
		}
		s.follow(name)
		if s.ctx.Err() != nil {
			return
		}
	}
}

// follow copies one container's log until it ends.
func (s *streamer) follow(container string) {
	var since *metav1.Time
	var last time.Time // timestamp of the last line written
	for attempt := 0; attempt < 5 && s.ctx.Err() == nil; attempt++ {
		opts := &corev1.PodLogOptions{Container: container, Follow: true, Timestamps: true, SinceTime: since}
		rc, err := s.client.CoreV1().Pods(s.ns).GetLogs(s.pod, opts).Stream(s.ctx)
		if err == nil {
			last, err = s.copy(rc, last)
			rc.Close()
			if err == nil {
				return
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		if p := s.current().Status.Phase; p == corev1.PodSucceeded || p == corev1.PodFailed || attempt == 4 {
			// The container is gone or will not talk: say so in the
			// stage log rather than leave it silently short.
			s.log.Warn("kube: cannot read pod logs", "namespace", s.ns, "pod", s.pod, "container", container, "err", err)
			_ = s.out.line([]byte("[kontinuous] the logs of container " + container + " could not be read: " + err.Error())) // best effort
			return
		}
		s.log.Debug("kube: log stream broke; resuming", "namespace", s.ns, "pod", s.pod, "container", container, "err", err)
		if !last.IsZero() {
			since = &metav1.Time{Time: last}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// copy writes each line of r to the stage log, without the timestamp the
// kubelet puts in front of it, skipping lines at or before after (an
// earlier attempt wrote them). It returns the last timestamp written.
func (s *streamer) copy(r io.Reader, after time.Time) (time.Time, error) {
	br := bufio.NewReaderSize(r, maxLine)
	last := after
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			err = nil // a long line: written in pieces
		} else {
			line = bytes.TrimSuffix(line, []byte("\n"))
		}
		if len(line) > 0 || err == nil {
			ts, text := splitTimestamp(line)
			switch {
			case ts.IsZero():
				if werr := s.out.line(text); werr != nil {
					return last, werr
				}
			case !after.IsZero() && !ts.After(after):
				// already written before the stream broke
			default:
				if werr := s.out.line(text); werr != nil {
					return last, werr
				}
				last = ts
			}
		}
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return last, err
		}
	}
}

// splitTimestamp splits "2024-01-02T03:04:05.123456789Z text" into the
// timestamp and the text; a line without one is all text.
func splitTimestamp(line []byte) (time.Time, []byte) {
	i := bytes.IndexByte(line, ' ')
	if i < 20 || i > 40 {
		return time.Time{}, line
	}
	ts, err := time.Parse(time.RFC3339Nano, string(line[:i]))
	if err != nil {
		return time.Time{}, line
	}
	return ts, line[i+1:]
}

// containerState finds a container's state in the pod's status.
func containerState(p *corev1.Pod, name string) (corev1.ContainerState, bool) {
	for _, cs := range p.Status.InitContainerStatuses {
		if cs.Name == name {
			return cs.State, true
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return cs.State, true
		}
	}
	return corev1.ContainerState{}, false
}
