package api

import (
	"context"
	"errors"
	"net/http"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/auth/oauth1"
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
	UserID   string `json:"user_id" description:"<forge>|<the forge's user id>"`
	UserName string `json:"user_name" description:"the user name on the forge signed in with"`
	// Connections are the caller's stored forge tokens.
	Connections []Connection `json:"connections" description:"the caller's forge connections; an expired one is reconnected by signing in through /api/v1/login/{forge}/authorize"`
}

// Connection is one of a user's forge connections.
type Connection struct {
	Forge  string `json:"forge" description:"the forge's name, as GET /api/v1/forges lists it (github, bitbucket, bitbucket-dc)"`
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

// Disconnector removes a user's connection to a forge account linked to
// them; *pipeline.Service implements it. Defined here, where it is
// consumed.
type Disconnector interface {
	Disconnect(ctx context.Context, userID, forge string) error
}

// UserResources serves GET /api/v1/user, POST /api/v1/logout and DELETE
// /api/v1/user/connections/{forge}. They need a Bearer token (the auth
// filter's default).
type UserResources struct {
	users    auth.UserReader
	sessions Sessions
	conns    Disconnector
}

// NewUserResources returns the user resources: users reads stored users
// (pipeline.Store), sessions revokes tokens (*auth.Verifier).
func NewUserResources(users auth.UserReader, sessions Sessions) *UserResources {
	return &UserResources{users: users, sessions: sessions}
}

// WithConnections lets the user disconnect linked forge accounts through
// d; without it, DELETE /api/v1/user/connections/{forge} answers 501.
func (r *UserResources) WithConnections(d Disconnector) *UserResources {
	r.conns = d
	return r
}

// WebServices implements Resource.
func (r *UserResources) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1").Produces(restful.MIME_JSON)
	ws.Route(doc(ws.GET("/user").To(r.me).
		Doc("The caller: user id, login and forge connections").
		Writes(UserInfo{}).
		Returns(http.StatusOK, "the caller", UserInfo{}), tagUser, 401, 503))
	ws.Route(doc(ws.POST("/logout").To(r.logout).
		Doc("Revoke the presented token until it expires; using it afterwards answers 401").
		Returns(http.StatusNoContent, "revoked", nil).
		Returns(http.StatusNotImplemented, "revocation is not configured", Error{}), tagUser, 400, 401, 503))
	ws.Route(doc(ws.DELETE("/user/connections/{forge}").To(answer(r.disconnect)).Operation("disconnect").
		Doc("Disconnect a forge account linked to you (connected from this session through /api/v1/login/{forge}/authorize): the link is removed both ways, and the account's stored tokens are deleted unless it is still linked to another user (who keeps that connection). Not the forge you signed in with, and not while that account still owns pipelines (their builds use its token): delete those first. Applications (OAuth 1.0a) cannot call it").
		Param(ws.PathParameter("forge", "the forge's name, as GET /api/v1/forges lists it (github, bitbucket, ...)").DataType("string")).
		Returns(http.StatusNoContent, "disconnected", nil).
		Returns(http.StatusNotFound, "no forge of that name on this server, or you have no connection to it", Error{}).
		Returns(http.StatusConflict, "the forge you signed in with (your identity), your account there still owns pipelines (the Message names them), or the connection changed meanwhile (try again)", Error{}).
		Returns(http.StatusForbidden, "an OAuth 1.0a application cannot disconnect the user's accounts", Error{}).
		Returns(http.StatusNotImplemented, "this server keeps no connected accounts", Error{}), tagUser, 401, 503))
	return []*restful.WebService{ws}
}

func (r *UserResources) disconnect(req *restful.Request, _ *restful.Response) (int, any, error) {
	ctx := req.Request.Context()
	id, err := auth.FromContext(ctx)
	if err != nil {
		return 0, nil, err
	}
	if id.Source == oauth1.Source {
		return 0, nil, pipeline.Errorf(pipeline.ErrForbidden, "an OAuth application cannot disconnect your accounts; sign in as the user")
	}
	if r.conns == nil {
		return 0, nil, pipeline.Errorf(pipeline.ErrNotImplemented, "this server keeps no connected accounts")
	}
	return http.StatusNoContent, nil, r.conns.Disconnect(ctx, id.UserID, req.PathParameter("forge"))
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
