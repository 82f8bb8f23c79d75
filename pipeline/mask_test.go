package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// maskAll writes each chunk to a fresh masker and returns what reached the
// underlying writer after Close.
func maskAll(t *testing.T, secrets []string, chunks ...string) string {
	t.Helper()
	var out bytes.Buffer
	m := NewMasker(&out, secrets)
	for _, c := range chunks {
		if n, err := m.Write([]byte(c)); err != nil || n != len(c) {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return out.String()
}

func TestMaskReplacesSecretValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"one secret", []string{"hunter22"}, "pw=hunter22\n", "pw=********\n"},
		{"every occurrence", []string{"s3cr3t"}, "s3cr3t s3cr3t\nx s3cr3t\n", "******** ********\nx ********\n"},
		{"several secrets", []string{"alpha-1", "bravo-2"}, "alpha-1/bravo-2\n", "********/********\n"},
		{"longest wins at a position", []string{"abcd", "abcdefgh"}, "abcdefgh!\n", "********!\n"},
		{"overlapping occurrences are one run", []string{"abcd1234", "1234wxyz"}, "<abcd1234wxyz>\n", "<********>\n"},
		{"self-overlapping run", []string{"aaaa"}, "aaaaaa-\n", "********-\n"},
		{"short values are not masked", []string{"", "a", "on", "dev", "  x  "}, "dev on a x\n", "dev on a x\n"},
		{"value with surrounding white space also masked trimmed", []string{"  tok-9999\n"}, "tok-9999\n", "********\n"},
		{"no secrets passes output unchanged", nil, "plain\nlines\n", "plain\nlines\n"},
		{"no trailing newline is flushed on close", []string{"hunter22"}, "end hunter22", "end ********"},
		{"prefix at end of output is not a secret", []string{"hunter22"}, "hunt", "hunt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := maskAll(t, tc.secrets, tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMaskMultiLineSecret(t *testing.T) {
	key := "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\nab\n-----END KEY-----\n"
	for _, tc := range []struct {
		name   string
		secret string
		in     string
		want   string
	}{
		{"whole value", key, "key:\n" + key + "done\n", "key:\n********\n********\n********\n********\n********\ndone\n"},
		{"lines printed apart", key, "MIIEvQIBADANBgkq\nother hkiG9w0BAQEFAASC\n", "********\nother ********\n"},
		{"re-indented", key, "  MIIEvQIBADANBgkq\n  hkiG9w0BAQEFAASC\n", "  ********\n  ********\n"},
		{"crlf line endings", "line-one\nline-two", "line-one\r\nline-two\r\n", "********\r\n********\r\n"},
		{"short lines masked as part of the whole", "ab\ncd\nef", "x ab\ncd\nef y\n", "x ********\n********\n******** y\n"},
		{"short lines alone are not masked", "ab\ncd\nef", "ab\n", "ab\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := maskAll(t, []string{tc.secret}, tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMaskSecretWrappedAcrossLines(t *testing.T) {
	secret := "s3cr3t-VALUE-9f8e7d6c5b4a"
	for _, tc := range []struct{ name, in, want string }{
		{"fold -w 13", "s3cr3t-VALUE-\n9f8e7d6c5b4a\n", "********\n********\n"},
		{"fold -w 5", "s3cr3\nt-VAL\nUE-9f\n8e7d6\nc5b4a\n", "********\n********\n********\n********\n********\n"},
		{"crlf", "before s3cr3t-VALUE-\r\n9f8e7d6c5b4a after\r\n", "before ********\r\n******** after\r\n"},
		{"broken too early is not the value", "s3c\nr3t-VALUE-9f8e7d6c5b4a\n", "s3c\nr3t-VALUE-9f8e7d6c5b4a\n"},
		{"a start that does not go on", "s3cr3t-\nother\n", "s3cr3t-\nother\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunked := range []bool{false, true} {
				in := []string{tc.in}
				if chunked {
					in = strings.SplitAfter(tc.in, "\n")
				}
				if got := maskAll(t, []string{secret}, in...); got != tc.want {
					t.Errorf("chunked=%v: got %q, want %q", chunked, got, tc.want)
				}
			}
		})
	}
}

func TestMaskSecretSplitAcrossWrites(t *testing.T) {
	in := "token=ghp_abcdef123456 and ghp_abcdef123456\n"
	var chunks []string
	for _, b := range []byte(in) {
		chunks = append(chunks, string(b))
	}
	got := maskAll(t, []string{"ghp_abcdef123456"}, chunks...)
	if want := "token=******** and ********\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMaskPassesOutputOnLineByLine(t *testing.T) {
	var out bytes.Buffer
	m := NewMasker(&out, []string{"secret-value"})
	write := func(s string) {
		t.Helper()
		if _, err := m.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write("first line\nsecond ")
	if got := out.String(); got != "first line\n" {
		t.Fatalf("after a partial line: %q", got)
	}
	write("line sec\n")
	if got := out.String(); got != "first line\nsecond line sec\n" {
		t.Fatalf("after its newline: %q", got)
	}
	// A line ending in the first MinSecretLen+ bytes of a secret waits for
	// the next: the value may go on there.
	write("third secret-\n")
	if got := out.String(); got != "first line\nsecond line sec\n" {
		t.Fatalf("a line ending in a secret's start was passed on: %q", got)
	}
	write("partial secret-va")
	if got := out.String(); got != "first line\nsecond line sec\nthird secret-\n" {
		t.Fatalf("once the next line shows it is not the secret: %q", got)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "first line\nsecond line sec\nthird secret-\npartial secret-va"; got != want {
		t.Fatalf("after Close: %q, want %q", got, want)
	}
	if _, err := m.Write([]byte("more\n")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

func TestMaskFlushesOverlongLineBeforeNewline(t *testing.T) {
	var out bytes.Buffer
	m := NewMasker(&out, []string{"secret-value"})
	long := strings.Repeat("x", maxMaskLine+10) + "secret-value"
	if _, err := m.Write([]byte(long)); err != nil {
		t.Fatal(err)
	}
	if out.Len() < maxMaskLine {
		t.Fatalf("an overlong line was held: %d bytes passed on", out.Len())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "secret-value") || !strings.HasSuffix(out.String(), "x"+Mask) {
		t.Errorf("overlong line not masked: ...%q", out.String()[out.Len()-20:])
	}
}

func TestMaskBoundsHeldOutputOfEndlessOverlap(t *testing.T) {
	var out bytes.Buffer
	m := NewMasker(&out, []string{"aaaa"})
	chunk := []byte(strings.Repeat("a", 4096))
	for range 64 { // 256 KiB of one endless overlapping run
		if _, err := m.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if held := len(m.(*masker).raw); held > maxMaskLine {
		t.Fatalf("an endless run is held without bound: %d bytes", held)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "aaaa") {
		t.Error("secret revealed after a forced flush")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestMaskReturnsUnderlyingWriteError(t *testing.T) {
	m := NewMasker(failingWriter{}, []string{"secret-value"})
	if _, err := m.Write([]byte("line\n")); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Write error = %v, want disk full", err)
	}
	if err := m.Close(); err == nil {
		t.Error("Close after a failed write returned nil")
	}
}

func TestMaskConcurrentWritesKeepLinesWhole(t *testing.T) {
	var out bytes.Buffer
	m := NewMasker(&out, []string{"hunter2hunter2"})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				fmt.Fprintf(m, "g%d i%d hunter2hunter2\n", g, i)
			}
		})
	}
	wg.Wait()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, " "+Mask) {
			t.Fatalf("line %q not masked", l)
		}
	}
}

// randomChunks splits s at random points.
func randomChunks(r *rand.Rand, s string) []string {
	var chunks []string
	for len(s) > 0 {
		n := 1 + r.IntN(min(len(s), 12))
		chunks = append(chunks, s[:n])
		s = s[n:]
	}
	return chunks
}

// checkMasked fails if a maskable secret (or a maskable line of one)
// appears in out.
func checkMasked(t *testing.T, secrets []string, in, out string) {
	t.Helper()
	for _, s := range secrets {
		parts := []string{s}
		for l := range strings.Lines(s) {
			parts = append(parts, strings.TrimSpace(l))
		}
		for _, p := range parts {
			if len(strings.TrimSpace(p)) >= MinSecretLen && strings.Contains(out, p) {
				t.Fatalf("secret %q revealed\ninput  %q\noutput %q", p, in, out)
			}
		}
	}
}

func TestMaskRandomChunkingNeverRevealsSecret(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "abcdef01 \n-"
	word := func(min, max int) string {
		b := make([]byte, min+r.IntN(max-min+1))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for i := range 500 {
		secrets := []string{word(4, 10), word(4, 24), word(0, 3)}
		var in strings.Builder
		for range 1 + r.IntN(8) {
			in.WriteString(word(0, 12))
			in.WriteString(secrets[r.IntN(len(secrets))])
		}
		in.WriteString(word(0, 6))
		whole := maskAll(t, secrets, in.String())
		chunked := maskAll(t, secrets, randomChunks(r, in.String())...)
		if chunked != whole {
			t.Fatalf("case %d: chunking changed the output\nsecrets %q\ninput   %q\nwhole   %q\nchunked %q", i, secrets, in.String(), whole, chunked)
		}
		checkMasked(t, secrets, in.String(), chunked)
	}
}

func FuzzMaskNeverRevealsSecret(f *testing.F) {
	f.Add("hunter22", "pw hunter22 and hunter22\n", uint64(1))
	f.Add("line-one\nline-two", "a line-one\nline-two b\nline-two\n", uint64(7))
	f.Fuzz(func(t *testing.T, secret, in string, seed uint64) {
		if strings.Contains(secret, Mask[:1]) || strings.Contains(in, Mask[:1]) {
			t.Skip("the mask itself could combine with output into a secret")
		}
		r := rand.New(rand.NewPCG(seed, seed))
		in = strings.ReplaceAll(in, "SECRET", secret)
		out := maskAll(t, []string{secret}, randomChunks(r, in)...)
		checkMasked(t, []string{secret}, in, out)
		if whole := maskAll(t, []string{secret}, in); whole != out {
			t.Fatalf("chunking changed the output: %q vs %q", whole, out)
		}
	})
}
