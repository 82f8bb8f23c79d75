// Package oauth1 makes Kontinuous an OAuth 1.0a provider (RFC 5849) for
// Bitbucket Data Center Application Links: registered consumers, request
// tokens, the user's consent, access tokens bound to a user, and
// authentication of API requests signed with RSA-SHA1.
//
// No well-kept Go library verifies OAuth 1.0a on the provider side (the
// maintained ones sign requests as clients), so the protocol code is here,
// small, and fuzzed (FuzzVerifyRequest).
package oauth1

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // RSA-SHA1 is what OAuth 1.0a Application Links sign with (RFC 5849 §3.4.3)
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Param is one protocol or request parameter.
type Param struct {
	Name, Value string
}

// Encode percent-encodes s as RFC 5849 §3.6 requires: every byte but the
// unreserved characters (ALPHA, DIGIT, "-", ".", "_", "~") becomes %XX
// with upper-case hex digits.
func Encode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// BaseString is the signature base string of RFC 5849 §3.4.1: the
// upper-case method, the encoded base string URI and the encoded,
// normalized parameters (§3.4.1.3.2: each name and value encoded, sorted
// by name then value, joined with "=" and "&"). oauth_signature and realm
// must not be among params.
func BaseString(method, baseURI string, params []Param) string {
	enc := make([]Param, len(params))
	for i, p := range params {
		enc[i] = Param{Encode(p.Name), Encode(p.Value)}
	}
	sort.Slice(enc, func(i, j int) bool {
		if enc[i].Name != enc[j].Name {
			return enc[i].Name < enc[j].Name
		}
		return enc[i].Value < enc[j].Value
	})
	var norm strings.Builder
	for i, p := range enc {
		if i > 0 {
			norm.WriteByte('&')
		}
		norm.WriteString(p.Name)
		norm.WriteByte('=')
		norm.WriteString(p.Value)
	}
	return Encode(strings.ToUpper(method)) + "&" + Encode(baseURI) + "&" + Encode(norm.String())
}

// BaseURI is the base string URI of RFC 5849 §3.4.1.2 for a request to
// path (escaped, without query) on the server whose public base URL is
// public: scheme and host in lower case, the port only when it is not the
// scheme's default, then public's path prefix and path. The public URL is
// used rather than the Host header because behind a proxy the client
// signed the URL it saw.
func BaseURI(public *url.URL, path string) string {
	scheme := strings.ToLower(public.Scheme)
	host := strings.ToLower(public.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if p := public.Port(); p != "" && !(scheme == "http" && p == "80") && !(scheme == "https" && p == "443") {
		host += ":" + p
	}
	return scheme + "://" + host + strings.TrimSuffix(public.EscapedPath(), "/") + path
}

// Errors of ParseAuthorization.
var (
	errNotOAuth  = errors.New("the Authorization header does not use the OAuth scheme")
	errMalformed = errors.New("the OAuth Authorization header is malformed")
)

// maxHeaderParams bounds the parameters of one Authorization header.
const maxHeaderParams = 32

// ParseAuthorization reads an "OAuth" Authorization header (RFC 5849
// §3.5.1): comma-separated name="value" pairs with percent-encoded names
// and values. realm is dropped (it is not signed); a parameter given twice
// is an error.
func ParseAuthorization(h string) ([]Param, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "OAuth") {
		return nil, errNotOAuth
	}
	var out []Param
	seen := map[string]bool{}
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, quoted, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		quoted = strings.TrimSpace(quoted)
		if !ok || len(quoted) < 2 || quoted[0] != '"' || quoted[len(quoted)-1] != '"' {
			return nil, errMalformed
		}
		n, err1 := url.PathUnescape(name)
		v, err2 := url.PathUnescape(quoted[1 : len(quoted)-1])
		if err1 != nil || err2 != nil || n == "" || strings.ContainsAny(quoted[1:len(quoted)-1], `"`) {
			return nil, errMalformed
		}
		if seen[n] {
			return nil, fmt.Errorf("the OAuth Authorization header gives %s twice", n)
		}
		seen[n] = true
		if n == "realm" {
			continue
		}
		out = append(out, Param{n, v})
		if len(out) > maxHeaderParams {
			return nil, errMalformed
		}
	}
	return out, nil
}

// VerifyRSASHA1 checks sig (base64, as in oauth_signature) over base with
// pub (RFC 5849 §3.4.3).
func VerifyRSASHA1(pub *rsa.PublicKey, base, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return errors.New("oauth_signature is not base64")
	}
	sum := sha1.Sum([]byte(base)) //nolint:gosec // see the import
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA1, sum[:], raw); err != nil {
		return errors.New("the signature does not match")
	}
	return nil
}

// SignRSASHA1 signs base with key, answering oauth_signature's value. The
// provider never signs; tests and stand-in consumers do.
func SignRSASHA1(key *rsa.PrivateKey, base string) (string, error) {
	sum := sha1.Sum([]byte(base)) //nolint:gosec // see the import
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA1, sum[:])
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}
