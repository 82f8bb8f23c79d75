package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is one program to run for a stage.
type process struct {
	path  string   // resolved executable
	argv  []string // argv[0] as the user wrote it
	dir   string
	env   []string
	stdin io.Reader // nil: /dev/null
	// ws, when set, runs the program in the executor's sandbox (when it
	// has one) showing this workspace.
	ws *workspace
}

// exitError is the error of a command that exited unsuccessfully.
type exitError struct {
	code   int
	signal syscall.Signal
}

func (e *exitError) Error() string {
	if e.code < 0 {
		return fmt.Sprintf("command killed by signal %d (%s)", int(e.signal), e.signal)
	}
	return fmt.Sprintf("command exited with status %d", e.code)
}

// drainWait bounds how long output is still read once the command is gone
// (a process that left the group may hold the pipe open).
const drainWait = 2 * time.Second

// runProcess runs p in its own process group with stdout and stderr merged
// into log line by line. It kills the whole group when the command exits,
// when ctx ends (SIGTERM, then SIGKILL after the grace period) and returns
// nil, an *exitError, or the stopped(ctx) error.
//
// In the sandbox (p.ws set and a Sandbox configured) the process group
// that gets SIGTERM is the sandbox's session, and the end is SIGKILL to
// the sandbox's init: the kernel then kills every process of its PID
// namespace, also those that left the group.
func (x *Executor) runProcess(ctx context.Context, p process, log io.Writer) error {
	if err := ctx.Err(); err != nil {
		return stopped(ctx)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("local executor: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        p.path,
		Args:        p.argv,
		Dir:         p.dir,
		Env:         p.env,
		Stdin:       p.stdin,
		Stdout:      pw,
		Stderr:      pw,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	var sb *sandboxed
	if p.ws != nil && x.cfg.Sandbox != nil {
		if sb, err = x.sandbox(cmd, p); err != nil {
			_ = pr.Close()
			_ = pw.Close()
			return err
		}
	}
	err = cmd.Start()
	_ = pw.Close() // the child has its copy; ours would keep the pipe open
	if sb != nil {
		sb.started()
	}
	if err != nil {
		_ = pr.Close()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("start %s: %w", p.argv[0], err)
	}
	pid := cmd.Process.Pid

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		copyLines(log, pr)
	}()

	exited := exitedUnreaped(pid)
	stop := x.awaitExit(ctx, pid, sb, exited)
	// Whatever is left of the group goes now, children included.
	_ = syscall.Kill(-pid, syscall.SIGKILL) // nothing left is fine
	if sb != nil {
		sb.kill()
	}
	werr := cmd.Wait()

	select {
	case <-copied:
	case <-time.After(drainWait):
		x.log.Warn("command output still open after it exited; closing it", "command", p.argv[0])
	}
	_ = pr.Close() // ends copyLines if a stray process holds the pipe
	<-copied

	if stop != nil {
		return stop
	}
	return waitOutcome(p, sb, werr)
}

// exitedUnreaped returns a channel closed when process pid has exited but
// is not reaped yet, so its process group id stays ours until every
// member is killed.
func exitedUnreaped(pid int) <-chan struct{} {
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		var info unix.Siginfo
		for {
			if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != unix.EINTR {
				return
			}
		}
	}()
	return exited
}

// awaitExit waits for the command to exit; when ctx ends first it asks the
// group (or the sandbox's session) to stop with SIGTERM, waits at most the
// grace period, and returns the stopped(ctx) error (nil otherwise).
func (x *Executor) awaitExit(ctx context.Context, pid int, sb *sandboxed, exited <-chan struct{}) error {
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
	}
	stop := stopped(ctx)
	if sb != nil {
		sb.term(exited, x.cfg.KillGrace)
	} else {
		_ = syscall.Kill(-pid, syscall.SIGTERM) // the group may be gone already
	}
	select {
	case <-exited:
	case <-time.After(x.cfg.KillGrace):
	}
	return stop
}

// waitOutcome turns what cmd.Wait returned into runProcess's answer: nil,
// an *exitError, or why the sandbox or the wait failed.
func waitOutcome(p process, sb *sandboxed, werr error) error {
	if sb != nil && !sb.ran() && werr != nil {
		return fmt.Errorf("local executor: the stage's sandbox (bwrap) did not start: %v (bwrap's message is in the stage's log)", werr)
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &exitError{code: -1, signal: ws.Signal()}
		}
		return &exitError{code: ee.ExitCode()}
	}
	if werr != nil {
		return fmt.Errorf("local executor: wait for %s: %w", p.argv[0], werr)
	}
	return nil
}

// maxLogLine is the longest line copyLines writes at once.
const maxLogLine = 64 << 10

// copyLines copies r to w a line at a time, ending a last unterminated
// line with a newline. It reads r to its end even when w fails, so the
// command never blocks on a full pipe.
func copyLines(w io.Writer, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	failed := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && !failed {
			if err != nil && err != bufio.ErrBufferFull {
				line = append(line, '\n')
			}
			if _, werr := w.Write(line); werr != nil {
				failed = true
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
