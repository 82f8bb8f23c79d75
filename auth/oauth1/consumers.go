package oauth1

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"unicode"
)

// Consumer is an application the operator registered (the
// --oauth1-consumers file): Bitbucket Data Center's Application Link.
type Consumer struct {
	// Key is oauth_consumer_key.
	Key string
	// Name is shown to users on the consent page.
	Name string
	// PublicKey verifies the consumer's RSA-SHA1 signatures.
	PublicKey *rsa.PublicKey
	// Callback is the URL prefix the consumer's oauth_callback must start
	// with (same scheme and host, path under Callback's path).
	Callback *url.URL
}

// consumerFile is one entry of the consumers file.
type consumerFile struct {
	Key       string `json:"key"`
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Callback  string `json:"callback"`
}

// LoadConsumers reads and checks the consumers file: a JSON array of
// {"key", "name", "public_key" (PEM), "callback"}. Every problem is
// reported, one line each.
func LoadConsumers(path string) ([]Consumer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the OAuth 1.0a consumers file: %w", err)
	}
	return ParseConsumers(b)
}

// ParseConsumers checks the consumers file's content (see LoadConsumers).
func ParseConsumers(b []byte) ([]Consumer, error) {
	var raw []consumerFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf(`not a JSON array of {"key", "name", "public_key", "callback"}: %v`, err)
	}
	var errs []error
	var out []Consumer
	seen := map[string]int{}
	for i, c := range raw {
		where := fmt.Sprintf("consumer %d", i+1)
		if c.Key != "" {
			where += fmt.Sprintf(" (%q)", c.Key)
		}
		bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(where+": "+format, a...)) }
		switch {
		case c.Key == "":
			bad("key is missing")
		case !printable(c.Key):
			bad("key must be at most 200 printable characters without '/'")
		case seen[c.Key] > 0:
			bad("key is a duplicate of consumer %d", seen[c.Key])
		default:
			seen[c.Key] = i + 1
		}
		if strings.TrimSpace(c.Name) == "" {
			bad("name is missing")
		}
		pub, err := ParsePublicKey(c.PublicKey)
		if err != nil {
			bad("public_key: %v", err)
		}
		cb, err := parseCallback(c.Callback)
		if err != nil {
			bad("callback: %v", err)
		}
		out = append(out, Consumer{Key: c.Key, Name: strings.TrimSpace(c.Name), PublicKey: pub, Callback: cb})
	}
	if len(raw) == 0 {
		errs = append(errs, errors.New("the file lists no consumer"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func printable(s string) bool {
	return len(s) <= 200 && !strings.ContainsFunc(s, func(r rune) bool { return r == '/' || !unicode.IsPrint(r) })
}

// ParsePublicKey reads an RSA public key: PEM "PUBLIC KEY" (PKIX), "RSA
// PUBLIC KEY" (PKCS #1) or "CERTIFICATE" (Atlassian applications may give
// a self-signed certificate), or the bare base64 of a PKIX key as
// Atlassian's consumer information shows it. Keys under 1024 bits are
// refused (2048 or more is advisable).
func ParsePublicKey(s string) (*rsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("is missing")
	}
	var der []byte
	kind := "PUBLIC KEY"
	if blk, rest := pem.Decode([]byte(s)); blk != nil {
		if strings.TrimSpace(string(rest)) != "" {
			return nil, errors.New("has more than one PEM block")
		}
		der, kind = blk.Bytes, blk.Type
	} else if strings.Contains(s, "-----") {
		return nil, errors.New("is not valid PEM")
	} else {
		d, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, errors.New("is neither PEM nor base64")
		}
		der = d
	}
	var key any
	var err error
	switch kind {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(der)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(der)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(der); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("is a PEM %q block; want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE (never a private key)", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot be parsed: %v", err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("is not an RSA key (Application Links sign with RSA-SHA1)")
	}
	if pub.N.BitLen() < 1024 {
		return nil, fmt.Errorf("is %d bits; at least 1024 are required", pub.N.BitLen())
	}
	return pub, nil
}

// parseCallback checks a consumer's callback prefix: an absolute http(s)
// URL without user info, query or fragment.
func parseCallback(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("is missing (the URL prefix the consumer returns users to, e.g. https://bitbucket.example.com/)")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL without user info, query or fragment", s)
	}
	return u, nil
}

// allows reports whether callback is under the prefix: same scheme and
// host (port included), and a path equal to the prefix's or below it.
func allows(prefix *url.URL, callback string) bool {
	u, err := url.Parse(callback)
	if err != nil || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return false
	}
	if !strings.EqualFold(u.Scheme, prefix.Scheme) || !strings.EqualFold(u.Host, prefix.Host) {
		return false
	}
	pp, cp := prefix.EscapedPath(), u.EscapedPath()
	if pp == "" || pp == "/" {
		return true
	}
	if !strings.HasPrefix(cp, pp) {
		return false
	}
	return strings.HasSuffix(pp, "/") || len(cp) == len(pp) || cp[len(pp)] == '/'
}
