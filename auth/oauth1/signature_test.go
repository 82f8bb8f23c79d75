package oauth1

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// TestBaseStringMatchesRFC5849Example is the example of RFC 5849
// §3.4.1.1: parameters from the Authorization header, the query and the
// form body, encoded, sorted, realm and oauth_signature left out.
func TestBaseStringMatchesRFC5849Example(t *testing.T) {
	hp, err := ParseAuthorization(`OAuth realm="Example", oauth_consumer_key="9djdj82h48djs9d2", oauth_token="kkk9d7dh3k39sjv7", oauth_signature_method="HMAC-SHA1", oauth_timestamp="137131201", oauth_nonce="7d8f3e4a", oauth_signature="bYT5CMsGcbgUdFHObYMEfcx6bsw%3D"`)
	if err != nil {
		t.Fatal(err)
	}
	var params []Param
	for _, p := range hp {
		if p.Name != "oauth_signature" {
			params = append(params, p)
		}
	}
	for _, raw := range []string{"b5=%3D%253D&a3=a&c%40=&a2=r%20b", "c2&a3=2+q"} {
		q, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		for n, vs := range q {
			for _, v := range vs {
				params = append(params, Param{n, v})
			}
		}
	}
	public, _ := url.Parse("http://EXAMPLE.COM:80")
	got := BaseString("post", BaseURI(public, "/request"), params)
	want := "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q" +
		"%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_" +
		"key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m" +
		"ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk" +
		"9d7dh3k39sjv7"
	if got != want {
		t.Fatalf("base string\n got %s\nwant %s", got, want)
	}
}

func TestBaseURINormalizesSchemeHostAndPort(t *testing.T) {
	for _, c := range []struct{ public, path, want string }{
		{"HTTPS://Ci.Example.com:443", "/api/v1/user", "https://ci.example.com/api/v1/user"},
		{"http://ci.example.com:8080/", "/oauth/1.0a/request-token", "http://ci.example.com:8080/oauth/1.0a/request-token"},
		{"https://example.com/kontinuous/", "/api/v1/user", "https://example.com/kontinuous/api/v1/user"},
	} {
		u, _ := url.Parse(c.public)
		if got := BaseURI(u, c.path); got != c.want {
			t.Errorf("%s + %s: %s, want %s", c.public, c.path, got, c.want)
		}
	}
}

func TestEncodeKeepsOnlyUnreserved(t *testing.T) {
	if got := Encode("Ladies + Gentlemen ~._-/é"); got != "Ladies%20%2B%20Gentlemen%20~._-%2F%C3%A9" {
		t.Fatal(got)
	}
}

func TestParseAuthorizationRefusesMalformedHeaders(t *testing.T) {
	for _, h := range []string{
		`Bearer abc`,
		`OAuth oauth_nonce=abc`,
		`OAuth oauth_nonce="a", oauth_nonce="b"`,
		`OAuth oauth_nonce="%zz"`,
	} {
		if _, err := ParseAuthorization(h); err == nil {
			t.Errorf("%q accepted", h)
		}
	}
}

func TestCallbackPrefixIsMatchedOnURLBoundaries(t *testing.T) {
	prefix, _ := parseCallback("https://bitbucket.example.com/bb")
	for cb, want := range map[string]bool{
		"https://bitbucket.example.com/bb":                     true,
		"https://bitbucket.example.com/bb/plugins/servlet?x=1": true,
		"https://BITBUCKET.example.com/bb/x":                   true,
		"https://bitbucket.example.com/bbevil":                 false,
		"https://bitbucket.example.com.evil.com/bb":            false,
		"http://bitbucket.example.com/bb":                      false,
		"https://user@bitbucket.example.com/bb":                false,
		"https://bitbucket.example.com:8443/bb":                false,
		"oob":                                                  false,
	} {
		if got := allows(prefix, cb); got != want {
			t.Errorf("%s: %v, want %v", cb, got, want)
		}
	}
}

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

func key(t testing.TB) *rsa.PrivateKey {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		testKey = k
	})
	return testKey
}

func pubPEM(t testing.TB, k *rsa.PrivateKey) string {
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestConsumersFileReportsEveryProblemOnItsOwnLine(t *testing.T) {
	good := strings.ReplaceAll(pubPEM(t, key(t)), "\n", `\n`)
	_, err := ParseConsumers([]byte(`[
		{"key": "bb", "name": "Bitbucket", "public_key": "` + good + `", "callback": "https://bb.example.com/"},
		{"key": "bb", "name": "Again", "public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "callback": "ftp://x"},
		{"name": "", "public_key": "", "callback": ""}
	]`))
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{"duplicate of consumer 1", "public_key: cannot be parsed", "callback: \"ftp://x\"", "consumer 3: key is missing", "consumer 3: name is missing", "consumer 3: public_key: is missing", "consumer 3: callback: is missing"} {
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Errorf("no line says %q in:\n%s", want, err)
		}
	}
	if _, err := ParseConsumers([]byte(`[{"key": "bb", "name": "Bitbucket", "public_key": "` + good + `", "callback": "https://bb.example.com/"}]`)); err != nil {
		t.Fatal(err)
	}
}

func TestRSASHA1SignatureVerifiesOnlyTheSignedBaseString(t *testing.T) {
	k := key(t)
	sig, err := SignRSASHA1(k, "POST&a&b")
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRSASHA1(&k.PublicKey, "POST&a&b", sig); err != nil {
		t.Fatal(err)
	}
	if err := VerifyRSASHA1(&k.PublicKey, "POST&a&c", sig); err == nil {
		t.Fatal("tampered base string verified")
	}
	if err := VerifyRSASHA1(&k.PublicKey, "POST&a&b", "!!"); err == nil {
		t.Fatal("garbage signature verified")
	}
}
