package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Error is the body of every 4xx/5xx reply, as in the original Kontinuous.
type Error struct {
	Code    int    `json:"Code"`
	Message string `json:"Message"`
}

// statusTable maps domain sentinels to HTTP statuses, in one place.
var statusTable = []struct {
	err    error
	status int
}{
	{pipeline.ErrInvalid, http.StatusBadRequest},
	{pipeline.ErrUnauthorized, http.StatusUnauthorized},
	{pipeline.ErrForbidden, http.StatusForbidden},
	{pipeline.ErrNotFound, http.StatusNotFound},
	{pipeline.ErrConflict, http.StatusConflict},
	{pipeline.ErrTooLarge, http.StatusRequestEntityTooLarge},
	{pipeline.ErrRateLimited, http.StatusTooManyRequests},
	{pipeline.ErrUpstream, http.StatusBadGateway},
	{pipeline.ErrUnavailable, http.StatusServiceUnavailable},
	{pipeline.ErrNotImplemented, http.StatusNotImplemented},
	{context.DeadlineExceeded, http.StatusServiceUnavailable},
}

// StatusOf returns the HTTP status for err.
func StatusOf(err error) int {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	for _, e := range statusTable {
		if errors.Is(err, e.err) {
			return e.status
		}
	}
	return http.StatusInternalServerError
}

// writeError answers err in the contract's shape. 5xx causes are logged
// by the request logger (the message shown stays generic).
func writeError(req *restful.Request, resp *restful.Response, err error) {
	status := StatusOf(err)
	msg := pipeline.PublicMessage(err)
	if status == http.StatusRequestEntityTooLarge {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			msg = "request body exceeds " + strconv.FormatInt(mbe.Limit, 10) + " bytes"
		}
	}
	if status >= 500 && req != nil {
		req.SetAttribute(attrError, err)
	}
	writeStatus(resp, status, msg)
}

// writeStatus answers status with msg in the contract's shape.
func writeStatus(resp *restful.Response, status int, msg string) {
	if status == http.StatusServiceUnavailable {
		resp.Header().Set("Retry-After", "2")
	}
	if status == http.StatusUnauthorized && resp.Header().Get("WWW-Authenticate") == "" {
		resp.Header().Set("WWW-Authenticate", `Bearer realm="kontinuous"`)
	}
	writeJSON(resp, status, Error{Code: status, Message: msg})
}

// WriteHTTPError answers status in the contract's shape on a plain
// http.ResponseWriter (used outside go-restful routes).
func WriteHTTPError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "2")
	}
	w.WriteHeader(status)
	// The error is ignored: the client went away.
	_ = json.NewEncoder(w).Encode(Error{Code: status, Message: msg})
}

const attrError = "kontinuous.error"
