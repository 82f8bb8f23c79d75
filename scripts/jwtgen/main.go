// Command jwtgen prints a Kontinuous token for a GitHub user, as
// scripts/jwt-gen:
//
//	scripts/jwt-gen --secret <base64> --github-token <token> [--ttl 24h] [--github-api-url URL]
//
// It looks the token's user up at GitHub (GET /user) and prints one HS256
// JWT on stdout, signed with the decoded secret, with user_id
// "github|<id>", name, iat, exp, jti, iss "kontinuous" and identities
// [{provider: github, access_token}] as Auth0 rules made them: the server
// then acts on GitHub with that token for this user.
//
// --secret defaults to $AUTH_SECRET and --github-token to $GITHUB_TOKEN
// (prefer the environment: command lines are visible to other users of the
// machine). --github-api-url defaults to $GITHUB_API_URL, else
// https://api.github.com/.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-github/v60/github"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
)

// maxTTL bounds --ttl: a year.
const maxTTL = 365 * 24 * time.Hour

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run is the command; it returns the exit status (2 for usage errors).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("jwt-gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The secret and token defaults come from the environment after
	// parsing, so that --help never prints them.
	secret := fs.String("secret", "", "server AUTH_SECRET, base64 (standard or URL alphabet), at least 32 bytes decoded (default $AUTH_SECRET)")
	token := fs.String("github-token", "", "the user's GitHub token (default $GITHUB_TOKEN)")
	ttl := fs.Duration("ttl", auth.DefaultTokenTTL, "token lifetime")
	apiURL := fs.String("github-api-url", orDefault(getenv("GITHUB_API_URL"), "https://api.github.com/"), "GitHub REST base URL (GitHub Enterprise: https://host/api/v3/)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: scripts/jwt-gen --secret <base64> --github-token <token> [--ttl 24h] [--github-api-url URL]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jwt-gen: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *secret == "" {
		*secret = getenv("AUTH_SECRET")
	}
	if *token == "" {
		*token = getenv("GITHUB_TOKEN")
	}
	key, err := auth.DecodeSecret(*secret)
	if err != nil {
		var ie *pipeline.InvalidError
		if errors.As(err, &ie) {
			err = errors.New(ie.Reason)
		}
		fmt.Fprintf(stderr, "jwt-gen: --secret %v\n", err)
		return 2
	}
	if *token == "" {
		fmt.Fprintln(stderr, "jwt-gen: --github-token is required")
		return 2
	}
	if *ttl <= 0 || *ttl > maxTTL {
		fmt.Fprintf(stderr, "jwt-gen: --ttl must be between 1s and %s\n", maxTTL)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, login, err := lookUp(ctx, *apiURL, *token)
	if err != nil {
		fmt.Fprintf(stderr, "jwt-gen: %v\n", err)
		return 1
	}
	signed, err := mint(key, *token, id, login, *ttl)
	if err != nil {
		fmt.Fprintf(stderr, "jwt-gen: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, signed)
	return 0
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// lookUp returns the id and login of the token's user. Its errors never
// contain the token.
func lookUp(ctx context.Context, apiURL, token string) (int64, string, error) {
	base, err := url.Parse(apiURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return 0, "", fmt.Errorf("--github-api-url %q is not an absolute http(s) URL", apiURL)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	c := github.NewClient(&http.Client{Timeout: 20 * time.Second}).WithAuthToken(token)
	c.BaseURL = base
	u, resp, err := c.Users.Get(ctx, "")
	if err != nil {
		var ge *github.ErrorResponse
		switch {
		case resp != nil && resp.StatusCode == http.StatusUnauthorized:
			return 0, "", fmt.Errorf("GitHub at %s refused the token (401 Bad credentials)", base)
		case errors.As(err, &ge) && resp != nil:
			return 0, "", fmt.Errorf("GitHub at %s answered %d to GET /user", base, resp.StatusCode)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			return 0, "", fmt.Errorf("cannot reach GitHub at %s: %v", base, ue.Err)
		}
		return 0, "", fmt.Errorf("GET /user at %s: invalid reply", base)
	}
	if u.GetID() <= 0 || u.GetLogin() == "" {
		return 0, "", fmt.Errorf("GitHub at %s returned no user id or login", base)
	}
	return u.GetID(), u.GetLogin(), nil
}

// mint signs the token.
func mint(key []byte, ghToken string, id int64, login string, ttl time.Duration) (string, error) {
	now := time.Now().Truncate(time.Second)
	userID := "github|" + strconv.FormatInt(id, 10)
	claims := jwt.MapClaims{
		"iss":     auth.IssuerName,
		"sub":     userID,
		"user_id": userID,
		"name":    login,
		"iat":     now.Unix(),
		"exp":     now.Add(ttl).Unix(),
		"jti":     randomJTI(),
		"identities": []map[string]any{{
			"provider":     "github",
			"connection":   "github",
			"isSocial":     true,
			"user_id":      id,
			"access_token": ghToken,
		}},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return s, nil
}

// randomJTI returns 128 random bits, base64url: the token's id, so that
// POST /api/v1/logout can revoke it.
func randomJTI() string {
	var b [16]byte
	// crypto/rand.Read never returns an error (it panics if the system
	// random source fails).
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
