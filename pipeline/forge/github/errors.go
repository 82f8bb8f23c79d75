package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/kontinuous/kontinuous/pipeline"
)

// fail wraps a go-github error for op with the pipeline sentinel it means.
// The message is built from the status and GitHub's own message, never
// from the request (which carries the token in a header only, but a URL
// could still carry more than we want to repeat).
func (s *SCM) fail(ctx context.Context, op string, err error) error {
	mapped := classify(err)
	if errors.Is(mapped, pipeline.ErrRateLimited) {
		s.log.WarnContext(ctx, "githubscm: rate limited", "op", op, "detail", pipeline.PublicMessage(mapped))
	}
	return fmt.Errorf("githubscm: %s: %w", op, mapped)
}

// classify maps a go-github error to a pipeline error:
// 404 ErrNotFound, 401 ErrUnauthorized, 403 ErrForbidden, rate limits and
// 429 ErrRateLimited, 409 (and 422 "already exists") ErrConflict, anything
// else (5xx, network, timeouts) ErrUpstream.
func classify(err error) error {
	var (
		rle   *github.RateLimitError
		arle  *github.AbuseRateLimitError
		er    *github.ErrorResponse
		tfa   *github.TwoFactorAuthError
		acc   *github.AcceptedError
		until = func(t time.Time) string {
			d := time.Until(t).Round(time.Second)
			if d < 0 {
				d = 0
			}
			return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), d)
		}
	)
	switch {
	case errors.As(err, &rle):
		if rle.Rate.Reset.IsZero() {
			return pipeline.Errorf(pipeline.ErrRateLimited, "GitHub API rate limit exceeded; retry later")
		}
		return pipeline.Errorf(pipeline.ErrRateLimited, "GitHub API rate limit exceeded; it resets at %s", until(rle.Rate.Reset.Time))
	case errors.As(err, &arle):
		if arle.RetryAfter != nil {
			return pipeline.Errorf(pipeline.ErrRateLimited, "GitHub secondary rate limit exceeded; retry after %s", arle.RetryAfter.Round(time.Second))
		}
		return pipeline.Errorf(pipeline.ErrRateLimited, "GitHub secondary rate limit exceeded; retry in a few minutes")
	case errors.As(err, &tfa):
		return pipeline.Errorf(pipeline.ErrUnauthorized, "GitHub rejected the token (two-factor authentication required)")
	case errors.As(err, &acc):
		return pipeline.Errorf(pipeline.ErrUpstream, "GitHub is still preparing the answer; try again later")
	case errors.As(err, &er) && er.Response != nil:
		return classifyStatus(er.Response, message(er))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &pipeline.PublicError{Kind: pipeline.ErrUpstream, Msg: "GitHub call canceled or timed out", Cause: unwrapURLError(err)}
	}
	return &pipeline.PublicError{Kind: pipeline.ErrUpstream, Msg: "cannot reach GitHub", Cause: unwrapURLError(err)}
}

func classifyStatus(resp *http.Response, msg string) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusUnauthorized:
		return pipeline.Errorf(pipeline.ErrUnauthorized, "GitHub rejected the token (%s)", msg)
	case code == http.StatusForbidden:
		return pipeline.Errorf(pipeline.ErrForbidden, "GitHub refused: %s", msg)
	case code == http.StatusNotFound:
		return pipeline.Errorf(pipeline.ErrNotFound, "GitHub: %s", msg)
	case code == http.StatusConflict:
		return pipeline.Errorf(pipeline.ErrConflict, "GitHub: %s", msg)
	case code == http.StatusUnprocessableEntity && isConflict(msg):
		return pipeline.Errorf(pipeline.ErrConflict, "GitHub: %s", msg)
	case code == http.StatusTooManyRequests:
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			return pipeline.Errorf(pipeline.ErrRateLimited, "GitHub rate limit exceeded; retry after %s", time.Duration(secs)*time.Second)
		}
		return pipeline.Errorf(pipeline.ErrRateLimited, "GitHub rate limit exceeded; retry later")
	case code >= 500:
		return pipeline.Errorf(pipeline.ErrUpstream, "GitHub failed (%d %s)", code, msg)
	}
	return pipeline.Errorf(pipeline.ErrUpstream, "GitHub refused the request (%d %s)", code, msg)
}

// isConflict recognises GitHub's validation failures that mean "it exists
// already" or "you did not say which version you replace".
func isConflict(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{"already exists", "already in use", `"sha" wasn't supplied`, "does not match"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// maxMessage bounds how much of GitHub's message an error repeats.
const maxMessage = 300

// message is GitHub's message with its validation details, shortened.
func message(er *github.ErrorResponse) string {
	parts := []string{}
	if m := strings.TrimSpace(er.Message); m != "" {
		parts = append(parts, m)
	}
	for _, e := range er.Errors {
		switch {
		case e.Message != "":
			parts = append(parts, e.Message)
		case e.Field != "" || e.Code != "":
			parts = append(parts, strings.TrimSpace(e.Field+" "+e.Code))
		}
	}
	msg := strings.Join(parts, ": ")
	if msg == "" {
		msg = http.StatusText(er.Response.StatusCode)
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if r := []rune(msg); len(r) > maxMessage {
		msg = string(r[:maxMessage]) + "…"
	}
	return msg
}

// unwrapURLError drops the request URL a *url.Error repeats, keeping the
// cause.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}
