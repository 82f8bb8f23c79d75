package secretbox_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

func newBox(t *testing.T, seed byte) *secretbox.Box {
	t.Helper()
	b, err := secretbox.New(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestNewRejectsShortSecret(t *testing.T) {
	for _, n := range []int{0, 16, 31} {
		if _, err := secretbox.New(make([]byte, n)); err == nil {
			t.Errorf("New(%d bytes) succeeded, want error", n)
		}
	}
	if _, err := secretbox.New(make([]byte, 64)); err != nil {
		t.Errorf("New(64 bytes): %v", err)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	b := newBox(t, 1)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", []byte{}},
		{"text", []byte("ghp_secret-token")},
		{"binary", []byte{0, 1, 2, 255, 254}},
		{"large", bytes.Repeat([]byte("x"), 1<<16)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := b.Seal(tc.in)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if !strings.HasPrefix(s, "v1.") {
				t.Errorf("sealed value %q lacks version prefix", s[:min(len(s), 10)])
			}
			if len(tc.in) > 0 && strings.Contains(s, string(tc.in)) {
				t.Errorf("sealed value contains the plaintext")
			}
			got, err := b.Open(s)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tc.in) {
				t.Errorf("Open = %q, want %q", got, tc.in)
			}
		})
	}
}

func TestSealUsesFreshNonce(t *testing.T) {
	b := newBox(t, 1)
	s1, _ := b.SealString("same")
	s2, _ := b.SealString("same")
	if s1 == s2 {
		t.Errorf("two seals of the same plaintext are equal: nonce reused")
	}
}

func TestSealStringRoundTrip(t *testing.T) {
	b := newBox(t, 1)
	s, err := b.SealString("hunter2")
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.OpenString(s)
	if err != nil || got != "hunter2" {
		t.Errorf("OpenString = %q, %v; want hunter2", got, err)
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	b := newBox(t, 1)
	s, err := b.SealString("deploy-key-private")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, "v1."))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		c := bytes.Clone(raw)
		c[i] ^= 0x01
		return "v1." + base64.RawURLEncoding.EncodeToString(c)
	}
	for _, tc := range []struct {
		name, in string
	}{
		{"nonce bit", flip(0)},
		{"ciphertext bit", flip(13)},
		{"tag bit", flip(len(raw) - 1)},
		{"truncated", s[:len(s)-4]},
		{"too short", "v1.AAAA"},
		{"no prefix", strings.TrimPrefix(s, "v1.")},
		{"other version", "v2." + strings.TrimPrefix(s, "v1.")},
		{"bad base64", "v1.!!!!"},
		{"empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.Open(tc.in)
			if !errors.Is(err, secretbox.ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", got, err)
			}
			if strings.Contains(err.Error(), "deploy-key-private") {
				t.Errorf("error leaks plaintext: %v", err)
			}
		})
	}
}

func TestOpenRejectsWrongKey(t *testing.T) {
	s, err := newBox(t, 1).SealString("secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newBox(t, 2).OpenString(s); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("Open with another key: %v, want ErrOpen", err)
	}
}

func TestAdditionalDataBindsValue(t *testing.T) {
	b := newBox(t, 1)
	s, err := b.SealStringWith("secret", []byte("/kontinuous/users/github|1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.OpenStringWith(s, []byte("/kontinuous/users/github|1")); err != nil || got != "secret" {
		t.Errorf("OpenStringWith same ad = %q, %v", got, err)
	}
	if _, err := b.OpenStringWith(s, []byte("/kontinuous/users/github|2")); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("OpenStringWith other ad: %v, want ErrOpen", err)
	}
	if _, err := b.OpenString(s); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("OpenString without ad: %v, want ErrOpen", err)
	}
}
