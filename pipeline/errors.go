package pipeline

import (
	"errors"
	"fmt"
)

// Domain error sentinels. Adapters wrap them with context
// (fmt.Errorf("etcdstore: get pipeline %s: %w", id, pipeline.ErrNotFound))
// and the api package maps them to HTTP statuses in one table.
var (
	// ErrNotFound: the thing does not exist (or the caller may not know it exists).
	ErrNotFound = errors.New("not found")
	// ErrConflict: it exists already, or a concurrent change won.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input is malformed; wrap with the field (see Invalid).
	ErrInvalid = errors.New("invalid")
	// ErrForbidden: the caller is known but lacks the right.
	ErrForbidden = errors.New("forbidden")
	// ErrUnauthorized: the caller could not be authenticated.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnavailable: a backing service (etcd) cannot be reached right now.
	ErrUnavailable = errors.New("unavailable")
	// ErrUpstream: the forge (GitHub) failed or refused a call.
	ErrUpstream = errors.New("upstream error")
	// ErrRateLimited: the forge asked us to slow down.
	ErrRateLimited = errors.New("rate limited")
	// ErrTooLarge: an input exceeds a size limit.
	ErrTooLarge = errors.New("too large")
	// ErrNotImplemented: a feature that cannot work in this configuration.
	ErrNotImplemented = errors.New("not available")
	// ErrLogPruned: a stage log was deleted by retention (--keep-logs)
	// while its build stays; it is an ErrNotFound.
	ErrLogPruned = fmt.Errorf("log pruned: %w", ErrNotFound)
)

// Causes (context.Cause) of the end of the ctx an Executor's RunStage gets,
// besides the server stopping (context.Canceled).
var (
	// ErrBuildCanceled: the build was canceled; the executor must stop the
	// stage's work (kill the process, delete the Job).
	ErrBuildCanceled = errors.New("build canceled")
	// ErrTakenOver: another server instance has taken the build over and
	// drives it now; a resumable executor should leave the stage's work
	// running for the new runner to adopt, and just return.
	ErrTakenOver = errors.New("build taken over by another instance")
)

// InvalidError is an ErrInvalid that names the offending field.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// Invalid returns an ErrInvalid naming field.
func Invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// PublicMessage returns a message for err that is safe to show to an API
// caller: the text of the outermost error that carries user-facing
// information. Adapters must never put secrets in error strings.
func PublicMessage(err error) string {
	if err == nil {
		return ""
	}
	var ie *InvalidError
	if errors.As(err, &ie) {
		return ie.Error()
	}
	var pe *PublicError
	if errors.As(err, &pe) {
		return pe.Msg
	}
	for _, s := range []error{ErrNotFound, ErrConflict, ErrForbidden, ErrUnauthorized, ErrUnavailable, ErrUpstream, ErrRateLimited, ErrTooLarge, ErrNotImplemented} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "internal error"
}

// PublicError wraps a sentinel with a message meant for the API caller.
// Cause, if set, is detail for the server's log only: Error includes it,
// PublicMessage does not.
type PublicError struct {
	Kind  error
	Msg   string
	Cause error
}

func (e *PublicError) Error() string {
	if e.Cause != nil {
		return e.Msg + ": " + e.Cause.Error()
	}
	return e.Msg
}

// Unwrap exposes the sentinel.
func (e *PublicError) Unwrap() error { return e.Kind }

// Errorf returns an error of kind (a sentinel above) whose message is shown
// to API callers as is.
func Errorf(kind error, format string, args ...any) error {
	return &PublicError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
