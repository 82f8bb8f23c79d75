package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// untouchedOnce fails the test if a state reaches the single-use record:
// forged and expired states must be refused before that. (Single use
// itself is tested against real etcd in login_test.go.)
type untouchedOnce struct{ t *testing.T }

func (o untouchedOnce) UseOnce(context.Context, string, time.Time) error {
	o.t.Errorf("UseOnce called for a state that should have been refused earlier")
	return nil
}

func TestForgedExpiredOrMisboundStatesAreRefusedBeforeBeingRecorded(t *testing.T) {
	st, err := NewStates(StatesConfig{Secret: testSecret, Once: untouchedOnce{t}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewStates(StatesConfig{Secret: []byte("ffffffffffffffffffffffffffffffff"), Once: untouchedOnce{t}})
	if err != nil {
		t.Fatal(err)
	}
	good, err := st.New("https://app.example/cb")
	if err != nil {
		t.Fatal(err)
	}
	// craft signs a payload with st's real key.
	craft := func(p statePayload) string {
		b, _ := json.Marshal(p) // cannot fail
		signed := StatePrefix + base64.RawURLEncoding.EncodeToString(b)
		return signed + "." + base64.RawURLEncoding.EncodeToString(st.mac(signed))
	}
	fromOther, _ := other.New("https://app.example/cb")
	payload := strings.Split(strings.TrimPrefix(good, StatePrefix), ".")
	tamperedPayload, _ := json.Marshal(statePayload{Nonce: "n", Expires: time.Now().Add(time.Hour).Unix(), Redirect: "https://evil.example/cb"})
	tests := []struct {
		name, state, redirect string
	}{
		{"signed with another key", fromOther, ""},
		{"payload swapped, old MAC kept", StatePrefix + base64.RawURLEncoding.EncodeToString(tamperedPayload) + "." + payload[1], ""},
		{"MAC truncated", good[:len(good)-4], ""},
		{"no MAC", StatePrefix + payload[0], ""},
		{"prefix only", StatePrefix, ""},
		{"expired", craft(statePayload{Nonce: "n1", Expires: time.Now().Add(-time.Second).Unix()}), ""},
		{"expiry further than the TTL allows", craft(statePayload{Nonce: "n2", Expires: time.Now().Add(24 * time.Hour).Unix()}), ""},
		{"no nonce", craft(statePayload{Expires: time.Now().Add(time.Minute).Unix()}), ""},
		{"another redirect_uri", good, "https://evil.example/cb"},
		{"not a server state", "abc", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := st.Check(t.Context(), tc.state, tc.redirect); !errors.Is(err, pipeline.ErrUnauthorized) {
				t.Fatalf("Check = %v, want ErrUnauthorized", err)
			}
		})
	}
}

func TestStateIsSignedAndCarriesItsRedirect(t *testing.T) {
	var recorded []string
	st, err := NewStates(StatesConfig{Secret: testSecret, Once: onceFunc(func(id string, exp time.Time) error {
		recorded = append(recorded, id)
		if d := time.Until(exp); d <= 9*time.Minute || d > 10*time.Minute {
			t.Errorf("state recorded until %s from now, want ~10 minutes", d)
		}
		return nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.New("https://app.example/cb?x=1")
	if err != nil {
		t.Fatal(err)
	}
	if !IsServerState(s) {
		t.Fatalf("state %q lacks the ks1. prefix", s)
	}
	got, err := st.Check(t.Context(), s, "")
	if err != nil || got != "https://app.example/cb?x=1" {
		t.Fatalf("Check = %q, %v", got, err)
	}
	if len(recorded) != 1 || !strings.HasPrefix(recorded[0], "oauth-state/") {
		t.Errorf("recorded %q, want one oauth-state/<nonce>", recorded)
	}
}

type onceFunc func(id string, exp time.Time) error

func (f onceFunc) UseOnce(_ context.Context, id string, exp time.Time) error { return f(id, exp) }

// A state issued for one forge's login is refused by another forge's, and
// nothing is recorded for it; the forge that issued it accepts it.
func TestStateIsBoundToItsForge(t *testing.T) {
	base, err := NewStates(StatesConfig{Secret: testSecret, Once: untouchedOnce{t}})
	if err != nil {
		t.Fatal(err)
	}
	state, err := base.ForForge("bitbucket").New("")
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []*States{base.ForForge("github"), base.ForForge("bitbucket-dc"), base} {
		if _, err := other.Check(context.Background(), state, ""); !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Fatalf("%q: a bitbucket state checked elsewhere: %v", other.forge, err)
		}
	}
	used := 0
	bb, err := NewStates(StatesConfig{Secret: testSecret, Once: onceFunc(func(string, time.Time) error { used++; return nil })})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bb.ForForge("bitbucket").Check(context.Background(), state, ""); err != nil || used != 1 {
		t.Fatalf("the issuing forge refused its state: %v (recorded %d)", err, used)
	}
}
