// Package secretbox encrypts secret material at rest (webhook secrets,
// deploy keys, forge tokens, secret values) with AES-256-GCM under a key
// derived from the server's secret with HKDF-SHA256.
//
// A sealed value is the text "v1." followed by the unpadded URL-safe base64
// of nonce (12 random bytes) || ciphertext || tag. Sealing may bind
// additional data (for instance the etcd key of the record) so that a
// ciphertext copied into another record does not open there.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// MinSecretLen is the shortest secret New accepts, in bytes.
const MinSecretLen = 32

// info labels the HKDF derivation so that the same server secret used for
// other purposes (JWT signing) yields an unrelated key here.
const info = "kontinuous secretbox v1"

// prefix marks the format version of a sealed value.
const prefix = "v1."

// ErrOpen is returned when a sealed value cannot be opened: it is
// malformed, was tampered with, was sealed under another key or bound to
// other additional data. Its text never includes the value.
var ErrOpen = errors.New("secretbox: cannot open sealed value")

// Box seals and opens values. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New derives the box's key from secret, which must be at least
// MinSecretLen bytes of high-entropy key material.
func New(secret []byte) (*Box, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("secretbox: secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	key, err := hkdf.Key(sha256.New, secret, nil, info, 32)
	if err != nil {
		return nil, fmt.Errorf("secretbox: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext with a fresh random nonce.
func (b *Box) Seal(plaintext []byte) (string, error) {
	return b.SealWith(plaintext, nil)
}

// SealWith encrypts plaintext bound to additional data ad: OpenWith must be
// given the same ad to open it.
func (b *Box) SealWith(plaintext, ad []byte) (string, error) {
	ns := b.aead.NonceSize()
	out := make([]byte, ns, ns+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return "", fmt.Errorf("secretbox: nonce: %w", err)
	}
	out = b.aead.Seal(out, out[:ns], plaintext, ad)
	return prefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts a value made by Seal. It returns an error wrapping ErrOpen
// if s is malformed, tampered with or sealed under another key.
func (b *Box) Open(s string) ([]byte, error) {
	return b.OpenWith(s, nil)
}

// OpenWith decrypts a value made by SealWith with the same additional data.
func (b *Box) OpenWith(s string, ad []byte) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Errorf("%w: unknown format", ErrOpen)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: bad encoding", ErrOpen)
	}
	ns := b.aead.NonceSize()
	if len(raw) < ns+b.aead.Overhead() {
		return nil, fmt.Errorf("%w: too short", ErrOpen)
	}
	pt, err := b.aead.Open(nil, raw[:ns], raw[ns:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrOpen)
	}
	return pt, nil
}

// SealString seals a string.
func (b *Box) SealString(s string) (string, error) { return b.Seal([]byte(s)) }

// OpenString opens a value sealed by SealString.
func (b *Box) OpenString(s string) (string, error) {
	pt, err := b.Open(s)
	return string(pt), err
}

// SealStringWith seals a string bound to additional data ad.
func (b *Box) SealStringWith(s string, ad []byte) (string, error) {
	return b.SealWith([]byte(s), ad)
}

// OpenStringWith opens a value sealed by SealStringWith with the same ad.
func (b *Box) OpenStringWith(s string, ad []byte) (string, error) {
	pt, err := b.OpenWith(s, ad)
	return string(pt), err
}
