package oauth1

import (
	"net/url"
	"testing"
)

// FuzzVerifyRequest feeds arbitrary Authorization headers and form bodies
// through the verifier's parsing, base string and RSA-SHA1 check: it must
// never panic, and a signature made for one request must not verify
// another.
func FuzzVerifyRequest(f *testing.F) {
	k := key(f)
	f.Add(`OAuth oauth_consumer_key="bb", oauth_token="t", oauth_signature_method="RSA-SHA1", oauth_timestamp="1", oauth_nonce="n", oauth_signature="AAAA"`, "a=1&b=%20", "/api/v1/user")
	f.Add(`OAuth realm="x", oauth_callback="https%3A%2F%2Fbb.example.com%2Fcb"`, "", "/oauth/1.0a/request-token")
	f.Add(`OAuth ,,, a="", ="x"`, "c2&a3=2+q", "/%zz")
	base := BaseString("GET", "https://ci.example.com/api/v1/user", []Param{{"oauth_nonce", "fixed"}})
	sig, err := SignRSASHA1(k, base)
	if err != nil {
		f.Fatal(err)
	}
	public, _ := url.Parse("https://ci.example.com")
	f.Fuzz(func(t *testing.T, header, body, path string) {
		params, err := ParseAuthorization(header)
		if err != nil {
			return
		}
		q, _ := url.ParseQuery(body) // a partial parse is fine here
		for n, vs := range q {
			for _, v := range vs {
				params = append(params, Param{n, v})
			}
		}
		b := BaseString("GET", BaseURI(public, path), params)
		if b != base && VerifyRSASHA1(&k.PublicKey, b, sig) == nil {
			t.Fatalf("a signature of %q verified %q", base, b)
		}
	})
}
