package api

import (
	"context"
	"errors"
	"net/http"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
)

const tagUser = "user"

// Sessions revokes the caller's token; *auth.Verifier implements it.
// Defined here, where it is consumed.
type Sessions interface {
	Revoke(ctx context.Context, id auth.Identity) error
}

// UserInfo is the caller as GET /api/v1/user shows them.
type UserInfo struct {
	UserID   string `json:"user_id" description:"<forge>|<numeric forge user id>"`
	UserName string `json:"user_name" description:"GitHub login"`
	// Connections are the caller's stored forge tokens.
	Connections []Connection `json:"connections" description:"the caller's forge connections; an expired one is reconnected by signing in through /api/v1/login/{forge}/authorize"`
}

// Connection is one of a user's forge connections.
type Connection struct {
	Forge  string `json:"forge" description:"github or bitbucket"`
	Login  string `json:"login" description:"the user name on that forge"`
	Status string `json:"status" description:"connected or expired"`
	// Linked: the account was connected from a session signed in with
	// another forge (account linking), rather than signed in with.
	Linked bool `json:"linked,omitempty" description:"true for an account connected to this user from another forge's session"`
	// ReconnectURL, on a linked account, is where to reconnect it: GET it
	// with your Bearer token (the connection you signed in with is
	// reconnected by signing in again, at its forge's login_url).
	ReconnectURL string `json:"reconnect_url,omitempty" description:"linked accounts: GET it with your Bearer token to reconnect (the sign-in connection reconnects by signing in again)"`
}

// UserResources serves GET /api/v1/user and POST /api/v1/logout. Both need
// a Bearer token (the auth filter's default).
type UserResources struct {
	users    auth.UserReader
	sessions Sessions
}

// NewUserResources returns the user resources: users reads stored users
// (pipeline.Store), sessions revokes tokens (*auth.Verifier).
func NewUserResources(users auth.UserReader, sessions Sessions) *UserResources {
	return &UserResources{users: users, sessions: sessions}
}

// WebServices implements Resource.
func (r *UserResources) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1").Produces(restful.MIME_JSON)
	ws.Route(doc(ws.GET("/user").To(r.me).
		Doc("The caller: user id and GitHub login").
		Writes(UserInfo{}).
		Returns(http.StatusOK, "the caller", UserInfo{}), tagUser, 401, 503))
	ws.Route(doc(ws.POST("/logout").To(r.logout).
		Doc("Revoke the presented token until it expires; using it afterwards answers 401").
		Returns(http.StatusNoContent, "revoked", nil).
		Returns(http.StatusNotImplemented, "revocation is not configured", Error{}), tagUser, 400, 401, 503))
	return []*restful.WebService{ws}
}

func (r *UserResources) me(req *restful.Request, resp *restful.Response) {
	ctx := req.Request.Context()
	id, err := auth.FromContext(ctx)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	info := UserInfo{UserID: id.UserID, UserName: id.Login, Connections: []Connection{}}
	u, err := r.users.GetUser(ctx, id.UserID)
	switch {
	case err == nil:
		if u.Login != "" {
			info.UserName = u.Login
		}
	case errors.Is(err, pipeline.ErrNotFound):
		// A token from jwt-gen or Auth0 for a user who never logged in
		// here: the token's own name is all there is.
	default:
		writeError(req, resp, err)
		return
	}
	// The caller's own connection, then each account linked to them.
	conns, err := pipeline.Connections(ctx, r.users, id.UserID)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	for _, c := range conns {
		if c.Forge == "" || (!c.User.Token.Valid() && !c.User.Token.Expired) {
			continue
		}
		conn := Connection{Forge: c.Forge, Login: c.User.Login,
			Status: pipeline.ConnectionStatus(c.User.Token)}
		if c.User.ID != id.UserID {
			conn.Linked, conn.ReconnectURL = true, "/api/v1/login/"+c.Forge+"/authorize"
		}
		info.Connections = append(info.Connections, conn)
	}
	writeJSON(resp, http.StatusOK, info)
}

func (r *UserResources) logout(req *restful.Request, resp *restful.Response) {
	ctx := req.Request.Context()
	id, err := auth.FromContext(ctx)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	if err := r.sessions.Revoke(ctx, id); err != nil {
		writeError(req, resp, err)
		return
	}
	resp.WriteHeader(http.StatusNoContent)
}
