package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestIssuedTokenHasRequiredClaimsAndNoGitHubToken(t *testing.T) {
	iss, err := NewIssuer(IssuerConfig{Secret: testSecret, TTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	u := pipeline.User{ID: "github|1001", Login: "octocat", Token: pipeline.ForgeToken{AccessToken: "gho_must_not_leak"}}
	tok, exp, err := iss.Issue(u)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(payload), "gho_must_not_leak") {
		t.Fatalf("issued token carries the GitHub token: %s", payload)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"iss": "kontinuous", "sub": "github|1001", "user_id": "github|1001", "name": "octocat", "typ": "user"} {
		if c[k] != want {
			t.Errorf("claim %s = %v, want %v", k, c[k], want)
		}
	}
	iat, _ := c["iat"].(float64)
	if e, _ := c["exp"].(float64); int64(e) != exp.Unix() || int64(e)-int64(iat) != int64((2*time.Hour).Seconds()) {
		t.Errorf("exp = %v, iat = %v, want exp = iat + 2h = %v", c["exp"], c["iat"], exp.Unix())
	}
	jti, _ := c["jti"].(string)
	if b, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(b) != 16 {
		t.Errorf("jti %q is not 128 random bits", jti)
	}
	tok2, _, _ := iss.Issue(u)
	v, err := NewVerifier(t.Context(), VerifierConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	a, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.Verify(t.Context(), tok2)
	if err != nil {
		t.Fatal(err)
	}
	if a.TokenID == b.TokenID {
		t.Errorf("two tokens share jti %q", a.TokenID)
	}
}

func TestDecodeSecretAcceptsBothAlphabetsAndRefusesShortKeys(t *testing.T) {
	key := []byte("\xfb\xff\xfe0123456789abcdef0123456789abcdef")
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"standard padded", base64.StdEncoding.EncodeToString(key), true},
		{"standard unpadded", base64.RawStdEncoding.EncodeToString(key), true},
		{"URL padded", base64.URLEncoding.EncodeToString(key), true},
		{"URL unpadded", base64.RawURLEncoding.EncodeToString(key), true},
		{"with surrounding space", " " + base64.StdEncoding.EncodeToString(key) + "\n", true},
		{"31 bytes", base64.StdEncoding.EncodeToString(key[:31]), false},
		{"not base64", "this is not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", false},
		{"mixed alphabets", "+-" + base64.RawStdEncoding.EncodeToString(key), false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeSecret(tc.in)
			if !tc.ok {
				if !errors.Is(err, pipeline.ErrInvalid) {
					t.Fatalf("DecodeSecret = %v, want ErrInvalid", err)
				}
				if tc.in != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.in)) {
					t.Errorf("error repeats the secret: %v", err)
				}
				return
			}
			if err != nil || string(got) != string(key) {
				t.Fatalf("DecodeSecret = %x, %v; want %x", got, err, key)
			}
		})
	}
}

func TestLimiterAllowsABurstPerClientThenRefuses(t *testing.T) {
	l := NewLimiter(LimiterConfig{Rate: 1.0 / 3600, Burst: 3, MaxClients: 100})
	for i := range 3 {
		if ok, _ := l.Allow("198.51.100.1"); !ok {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	ok, retry := l.Allow("198.51.100.1")
	if ok || retry <= 0 {
		t.Fatalf("attempt 4 = %v, retry %s; want refused with a positive Retry-After", ok, retry)
	}
	if RetryAfterSeconds(retry) < 1 {
		t.Errorf("RetryAfterSeconds = %d", RetryAfterSeconds(retry))
	}
	if ok, _ := l.Allow("198.51.100.2"); !ok {
		t.Errorf("another client was refused")
	}
}

func TestLimiterMemoryIsBounded(t *testing.T) {
	l := NewLimiter(LimiterConfig{Rate: 1.0 / 3600, Burst: 1, MaxClients: 5})
	for i := range 50 {
		l.Allow("client-" + itoa(int64(i)))
		if n := len(l.clients); n > 5 {
			t.Fatalf("tracking %d clients, bound is 5", n)
		}
	}
	// The most recent client is still tracked (and limited).
	if ok, _ := l.Allow("client-49"); ok {
		t.Errorf("the most recent client's limit was forgotten")
	}
}
