package pipeline

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
)

// Mask replaces secret values in stage output.
const Mask = "********"

// MinSecretLen is the shortest value NewMasker masks. Shorter values
// ("1", "on", "dev") occur everywhere in ordinary output: masking them would
// make logs unreadable while protecting nothing an attacker could not guess.
// The same rule applies to each line of a multi-line value.
const MinSecretLen = 4

// maxMaskLine is the longest line the masker holds before passing it on
// without waiting for its newline.
const maxMaskLine = 64 << 10

// NewMasker returns a writer that passes output on to w with every secret
// value replaced by Mask. The rules:
//
//   - Values shorter than MinSecretLen bytes (after trimming surrounding
//     white space) are not masked; see MinSecretLen.
//   - A value is masked wherever it appears, also when the process writes it
//     in pieces across several Write calls.
//   - A multi-line value (a key, a certificate) is masked as a whole, and
//     each of its lines of at least MinSecretLen bytes is masked on its own,
//     so a program that re-indents or re-wraps it does not reveal it.
//   - Overlapping occurrences are masked as one run.
//
// Output is passed on a line at a time: a line is held until its newline,
// until it exceeds 64 KiB, or until Close. Close flushes what is held; it
// does not close w, which stays the caller's. The writer is safe for
// concurrent use; Write after Close fails.
func NewMasker(w io.Writer, secrets []string) io.WriteCloser {
	m := &masker{w: w}
	seen := map[string]bool{}
	add := func(s string) {
		if len(strings.TrimSpace(s)) < MinSecretLen || seen[s] {
			return
		}
		seen[s] = true
		m.secrets = append(m.secrets, []byte(s))
		m.first[s[0]] = true
		m.maxLen = max(m.maxLen, len(s))
	}
	for _, v := range secrets {
		add(v)
		add(strings.TrimSpace(v))
		if strings.ContainsAny(v, "\r\n") {
			for line := range strings.Lines(v) {
				line = strings.TrimRight(line, "\r\n")
				add(line)
				add(strings.TrimSpace(line))
			}
		}
	}
	// Longest first, so the first full match found at a position is the
	// longest one.
	slices.SortFunc(m.secrets, func(a, b []byte) int { return len(b) - len(a) })
	m.maxHold = max(maxMaskLine, 2*m.maxLen)
	return m
}

type masker struct {
	w       io.Writer
	secrets [][]byte
	first   [256]bool
	maxLen  int
	maxHold int

	mu     sync.Mutex
	raw    []byte // bytes not yet scanned for secrets
	out    []byte // masked bytes not yet written (a partial line)
	err    error
	closed bool
}

// scan modes.
const (
	scanStream = iota // more output may follow: hold possible secret prefixes
	scanClose         // nothing follows: a prefix at the end is not a secret
	scanForce         // too much held: mask a possible prefix at the end
)

var errMaskerClosed = errors.New("masker: write after close")

func (m *masker) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errMaskerClosed
	}
	if m.err != nil {
		return 0, m.err
	}
	if len(m.secrets) == 0 {
		m.out = append(m.out, p...)
	} else {
		m.raw = append(m.raw, p...)
		m.scan(scanStream)
		if len(m.raw) > m.maxHold {
			m.scan(scanForce)
		}
	}
	m.flush(false)
	if m.err != nil {
		return 0, m.err
	}
	return len(p), nil
}

// Close flushes held output to w. It does not close w.
func (m *masker) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return m.err
	}
	m.closed = true
	m.scan(scanClose)
	m.flush(true)
	return m.err
}

// scan moves what can be decided from raw to out, masking secrets.
func (m *masker) scan(mode int) {
	buf := m.raw
	i := 0
scanning:
	for i < len(buf) {
		if m.prefixAt(buf, i) {
			if mode == scanStream {
				break
			}
			if mode == scanForce {
				m.out = append(m.out, Mask...)
				i = len(buf)
				break
			}
		}
		n := m.matchAt(buf, i)
		if n == 0 {
			m.out = append(m.out, buf[i])
			i++
			continue
		}
		// Extend the run over overlapping occurrences.
		end := i + n
		for j := i + 1; j < end; j++ {
			if m.prefixAt(buf, j) {
				if mode == scanStream {
					break scanning // decide when more output arrives
				}
				if mode == scanForce {
					end = len(buf)
					break
				}
			}
			end = max(end, j+m.matchAt(buf, j))
		}
		m.out = append(m.out, Mask...)
		i = end
	}
	m.raw = append(m.raw[:0], buf[i:]...)
}

// matchAt returns the length of the longest secret at buf[i:], or 0.
func (m *masker) matchAt(buf []byte, i int) int {
	if !m.first[buf[i]] {
		return 0
	}
	for _, s := range m.secrets {
		if bytes.HasPrefix(buf[i:], s) {
			return len(s)
		}
	}
	return 0
}

// prefixAt reports whether buf[i:] is a proper prefix of a secret: more
// output could complete it.
func (m *masker) prefixAt(buf []byte, i int) bool {
	if !m.first[buf[i]] || len(buf)-i >= m.maxLen {
		return false
	}
	rest := buf[i:]
	for _, s := range m.secrets {
		if len(s) > len(rest) && bytes.HasPrefix(s, rest) {
			return true
		}
	}
	return false
}

// flush writes the complete lines of out to w (everything when all is set
// or when the partial line is too long).
func (m *masker) flush(all bool) {
	n := len(m.out)
	if !all && n <= maxMaskLine {
		n = bytes.LastIndexByte(m.out, '\n') + 1
	}
	if n == 0 || m.err != nil {
		return
	}
	if _, err := m.w.Write(m.out[:n]); err != nil {
		m.err = err
	}
	m.out = append(m.out[:0], m.out[n:]...)
}
