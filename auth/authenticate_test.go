package auth

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestAuthenticateReadsOnlyTheBearerHeader(t *testing.T) {
	v, err := NewVerifier(t.Context(), VerifierConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, testSecret, nil, legacyClaims("github|42", "gho_x", time.Now().Add(time.Hour)))
	tests := []struct {
		name    string
		target  string
		headers []string
		ok      bool
	}{
		{"Bearer", "/api/v1/user", []string{"Bearer " + tok}, true},
		{"bearer in lower case", "/api/v1/user", []string{"bearer " + tok}, true},
		{"BEARER with extra spaces", "/api/v1/user", []string{"  BEARER   " + tok + " "}, true},
		{"no header", "/api/v1/user", nil, false},
		{"Basic scheme", "/api/v1/user", []string{"Basic " + tok}, false},
		{"token without scheme", "/api/v1/user", []string{tok}, false},
		{"two Authorization headers", "/api/v1/user", []string{"Bearer " + tok, "Bearer " + tok}, false},
		{"access_token in the query", "/api/v1/user?access_token=" + tok, nil, false},
		{"id_token in the query, valid header too", "/api/v1/user?x=1&id_token=" + tok, []string{"Bearer " + tok}, false},
		{"token behind a malformed pair", "/api/v1/user?bad=%zz&access_token=" + tok, []string{"Bearer " + tok}, false},
		{"a parameter merely ending in access_token", "/api/v1/user?github_access_token=1", []string{"Bearer " + tok}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, tc.target, nil)
			for _, h := range tc.headers {
				r.Header.Add("Authorization", h)
			}
			ctx, err := v.Authenticate(r)
			if !tc.ok {
				if !errors.Is(err, pipeline.ErrUnauthorized) {
					t.Fatalf("Authenticate = %v, want ErrUnauthorized", err)
				}
				if strings.Contains(r.URL.String(), tok) || strings.Contains(r.RequestURI, tok) {
					t.Errorf("the token is still in the request URL: %s", r.URL)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			id, err := FromContext(ctx)
			if err != nil || id.UserID != "github|42" || id.GitHubToken != "gho_x" {
				t.Fatalf("FromContext = %v, %v", id, err)
			}
		})
	}
}

func TestFromContextWithoutIdentityFailsClosed(t *testing.T) {
	if _, err := FromContext(t.Context()); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("FromContext = %v, want ErrUnauthorized", err)
	}
}

func TestIdentityNeverPrintsItsGitHubToken(t *testing.T) {
	id := Identity{UserID: "github|1", Login: "a", GitHubToken: "gho_secret_value", Source: SourceSecret}
	for _, s := range []string{fmt.Sprint(id), fmt.Sprintf("%v %+v %#v %s", id, id, id, id), id.LogValue().String()} {
		if strings.Contains(s, "gho_secret_value") {
			t.Errorf("printed identity shows the token: %s", s)
		}
	}
}

// TestConcurrentRequestsNeverSeeAnotherUsersIdentity proves the identity
// rides on each request: many users hit the server at once, each with their
// own token, and every reply names the caller (run with -race).
func TestConcurrentRequestsNeverSeeAnotherUsersIdentity(t *testing.T) {
	v, err := NewVerifier(t.Context(), VerifierConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, err := v.Authenticate(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		// Yield between authentication and use, where a shared variable
		// would be overwritten by another request.
		time.Sleep(time.Millisecond)
		id, err := FromContext(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "%s %s", id.UserID, id.GitHubToken)
	}))
	t.Cleanup(srv.Close)

	const users, perUser = 8, 20
	tokens := make([]string, users)
	for i := range tokens {
		tokens[i] = sign(t, jwt.SigningMethodHS256, testSecret, nil,
			legacyClaims(fmt.Sprintf("github|%d", i+1), fmt.Sprintf("gho_%d", i+1), time.Now().Add(time.Hour)))
	}
	start := make(chan struct{})
	errs := make(chan error, users*perUser)
	var wg sync.WaitGroup
	for u := range users {
		for range perUser {
			wg.Go(func() {
				<-start
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Authorization", "Bearer "+tokens[u])
				resp, err := srv.Client().Do(req)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("github|%d gho_%d", u+1, u+1); string(body) != want {
					errs <- fmt.Errorf("user %d got %q (status %d), want %q", u+1, body, resp.StatusCode, want)
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
