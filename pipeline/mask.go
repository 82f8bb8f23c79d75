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
//   - A value broken over lines (wrapped by fold, a terminal or a logger:
//     line breaks inside it once MinSecretLen of its bytes are out) is
//     masked too, each of its pieces, line breaks kept.
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
		m.out = appendMasked(m.out, buf[i:end])
		i = end
	}
	m.raw = append(m.raw[:0], buf[i:]...)
}

// matchAt returns how many bytes of buf, from i, the longest secret
// found there spans (line breaks inside included), or 0.
func (m *masker) matchAt(buf []byte, i int) int {
	if !m.first[buf[i]] {
		return 0
	}
	for _, s := range m.secrets {
		if n, st := walk(buf, i, s); st == walkComplete {
			return n
		}
	}
	return 0
}

// prefixAt reports whether buf[i:] is a proper prefix of a secret (line
// breaks inside allowed): more output could complete it.
func (m *masker) prefixAt(buf []byte, i int) bool {
	if !m.first[buf[i]] {
		return false
	}
	for _, s := range m.secrets {
		if _, st := walk(buf, i, s); st == walkPrefix {
			return true
		}
	}
	return false
}

// walk results.
const (
	walkMismatch = iota
	walkComplete // all of the secret is in buf
	walkPrefix   // buf ends inside the secret
)

// walk matches secret s against buf from i. Line breaks in buf may
// interrupt s once MinSecretLen of its bytes have matched — a value
// wrapped by `fold`, a terminal or a logger is still the value — so a line
// that ends in the first MinSecretLen or more bytes of a secret is held
// until the next line shows whether the secret goes on. It returns the
// bytes of buf walked and the result.
func walk(buf []byte, i int, s []byte) (int, int) {
	j, k := 0, i
	for j < len(s) {
		switch {
		case k == len(buf):
			return k - i, walkPrefix
		case buf[k] == s[j]:
			j++
		case (buf[k] == '\n' || buf[k] == '\r') && j >= MinSecretLen:
			// a line break inside the value
		default:
			return 0, walkMismatch
		}
		k++
	}
	return k - i, walkComplete
}

// appendMasked appends the mask for run, a masked span of output: one
// Mask per line it touches, its line breaks kept so logs keep their lines.
func appendMasked(out, run []byte) []byte {
	out = append(out, Mask...)
	for k := 0; k < len(run); {
		if run[k] != '\n' && run[k] != '\r' {
			k++
			continue
		}
		start := k
		for k < len(run) && (run[k] == '\n' || run[k] == '\r') {
			k++
		}
		out = append(out, run[start:k]...)
		if k < len(run) {
			out = append(out, Mask...)
		}
	}
	return out
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
