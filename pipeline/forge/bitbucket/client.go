// Package bitbucket is the Bitbucket Cloud forge: it implements
// pipeline.Forge (REST 2.0 calls, OAuth 2.0 consumer login with expiring
// access tokens and rotating refresh tokens, webhook verification and
// parsing, clone credentials) so that nothing outside it knows
// Bitbucket's endpoints, headers or payloads.
//
// The REST calls go through a small typed client of our own on net/http
// rather than github.com/ktrysmt/go-bitbucket: that library is pre-1.0,
// returns untyped map[string]interface{} results (every field would be
// re-checked by hand anyway), builds its own OAuth handling around the
// token it is given and covers hundreds of endpoints we do not use. We
// need about fifteen calls with typed replies, our own error mapping
// (401/403/404/429/5xx to the domain's errors, nothing echoed) and "next"
// paging; Woodpecker's Bitbucket forge makes the same choice.
package bitbucket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
)

// maxReply bounds a REST reply we read.
const maxReply = 8 << 20

// client is the typed REST 2.0 client: one per call, bound to a token.
type client struct {
	http *http.Client
	base string // API base, no trailing slash
	tok  string
}

// apiError is Bitbucket's error body: {"type":"error","error":{"message":…}}.
type apiError struct {
	Error struct {
		Message string `json:"message"`
	} `json:"error"`
}

// do sends method to path (relative to the API base, or an absolute
// "next" URL on the API's host) with body in, decodes the reply into out
// (when not nil) and maps failures to domain errors. It returns the
// response headers.
func (c *client) do(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	ctype := ""
	switch v := in.(type) {
	case nil:
	case rawBody:
		body, ctype = bytes.NewReader(v.data), v.ctype
	default:
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	u := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		u = c.base + path
	} else if !sameHost(path, c.base) {
		return nil, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket sent a next page on another host")
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		detail := "request failed"
		if errors.As(err, &ue) {
			detail = ue.Err.Error()
		}
		return nil, fmt.Errorf("%w (%s)", pipeline.Errorf(pipeline.ErrUpstream, "cannot reach Bitbucket at %s", c.base), detail)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, pipeline.Errorf(pipeline.ErrUpstream, "reading Bitbucket's reply to %s %s: %v", method, redact(path), err)
	}
	if resp.StatusCode >= 300 {
		return resp.Header, statusError(resp.StatusCode, method, path, data)
	}
	if out != nil {
		if p, ok := out.(*[]byte); ok {
			*p = data
			return resp.Header, nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return nil, pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket's reply to %s %s is not valid JSON", method, redact(path))
		}
	}
	return resp.Header, nil
}

// rawBody is a request body sent as is.
type rawBody struct {
	data  []byte
	ctype string
}

func sameHost(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && ua.Host == ub.Host
}

// redact drops the query (it may hold a search for a repository name; never
// a secret, but keep messages short).
func redact(p string) string {
	p, _, _ = strings.Cut(p, "?")
	return p
}

// statusError maps an HTTP failure to the domain's error kinds. Bitbucket's
// message is kept only when it is short plain text.
func statusError(code int, method, path string, data []byte) error {
	var ae apiError
	msg := ""
	if json.Unmarshal(data, &ae) == nil && len(ae.Error.Message) <= 200 && !strings.ContainsAny(ae.Error.Message, "\r\n") {
		msg = ": " + ae.Error.Message
	}
	where := method + " " + redact(path)
	switch {
	case code == http.StatusUnauthorized:
		return pipeline.Errorf(pipeline.ErrUnauthorized, "Bitbucket refused the token (%s)%s", where, msg)
	case code == http.StatusForbidden:
		return pipeline.Errorf(pipeline.ErrForbidden, "Bitbucket forbids %s%s", where, msg)
	case code == http.StatusNotFound:
		return pipeline.Errorf(pipeline.ErrNotFound, "Bitbucket: not found (%s)", where)
	case code == http.StatusTooManyRequests:
		return pipeline.Errorf(pipeline.ErrRateLimited, "Bitbucket's hourly rate limit is reached (%s)", where)
	case code >= 500:
		return pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket answered HTTP %d to %s", code, where)
	}
	return pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket answered HTTP %d to %s%s", code, where, msg)
}

// page is a REST 2.0 page.
type page[T any] struct {
	Next   string `json:"next"`
	Values []T    `json:"values"`
}

// maxPages bounds a paged list (100 values a page).
const maxPages = 100

// all follows "next" from path and returns every value.
func all[T any](ctx context.Context, c *client, path string) ([]T, error) {
	var out []T
	for i := 0; path != "" && i < maxPages; i++ {
		var p page[T]
		if _, err := c.do(ctx, http.MethodGet, path, nil, &p); err != nil {
			return nil, err
		}
		out = append(out, p.Values...)
		path = p.Next
	}
	return out, nil
}

// repoPath is /repositories/{ws}/{slug}, escaped.
func repoPath(ws, slug string) string {
	return "/repositories/" + url.PathEscape(ws) + "/" + url.PathEscape(slug)
}
