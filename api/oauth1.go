package api

import (
	"context"
	"net/http"
	"net/url"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/auth/oauth1"
	"github.com/kontinuous/kontinuous/pipeline"
)

const (
	tagOAuth1 = "oauth1"
	mimeForm  = "application/x-www-form-urlencoded"
)

// OAuth1Provider is the OAuth 1.0a provider for Bitbucket Data Center
// Application Links (docs/api.md); *oauth1.Provider implements it.
// Defined here, where it is consumed.
type OAuth1Provider interface {
	RequestToken(r *http.Request) (url.Values, error)
	AccessToken(r *http.Request) (url.Values, error)
	Describe(ctx context.Context, id auth.Identity, token string) (oauth1.Pending, error)
	Decide(ctx context.Context, id auth.Identity, token string, allow bool) (string, error)
	Applications(ctx context.Context, id auth.Identity) ([]oauth1.Application, error)
	Revoke(ctx context.Context, id auth.Identity, key string) error
}

// OAuth1Decision is the body of POST /api/v1/oauth1/authorize.
type OAuth1Decision struct {
	Token string `json:"oauth_token" description:"the request token the consumer sent the browser with"`
	Allow bool   `json:"allow" description:"true: allow the application to act as you; false: deny"`
}

// OAuth1Redirect is where the browser goes after the decision.
type OAuth1Redirect struct {
	Redirect string `json:"redirect" description:"the consumer's callback with oauth_token and, when allowed, oauth_verifier"`
}

// OAuth1Resources serves the OAuth 1.0a protocol endpoints
// (/oauth/1.0a/request-token, /oauth/1.0a/access-token: public, signed by
// the consumer), the consent decision (/api/v1/oauth1/authorize) and the
// user's authorized applications (/api/v1/user/applications).
type OAuth1Resources struct {
	p OAuth1Provider
}

// NewOAuth1Resources returns the resources; with a nil provider (no
// --oauth1-consumers) every route answers 501.
func NewOAuth1Resources(p OAuth1Provider) *OAuth1Resources {
	return &OAuth1Resources{p: p}
}

// WebServices implements Resource.
func (o *OAuth1Resources) WebServices() []*restful.WebService {
	notOn := "the OAuth 1.0a provider is not configured (--oauth1-consumers)"
	proto := new(restful.WebService)
	proto.Path("/oauth/1.0a").Produces(mimeForm, restful.MIME_JSON)
	signedDoc := "Signed by a registered consumer with RSA-SHA1 (RFC 5849): Authorization: OAuth oauth_consumer_key, oauth_signature_method=\"RSA-SHA1\", oauth_timestamp (±5 min), oauth_nonce (once), oauth_version=\"1.0\", oauth_signature"
	proto.Route(doc(proto.POST("/request-token").To(o.requestToken).
		Doc("OAuth 1.0a: a request token (lives 10 minutes, used once). "+signedDoc+", oauth_callback (under the consumer's registered callback; oob is refused). Answers application/x-www-form-urlencoded oauth_token, oauth_token_secret, oauth_callback_confirmed=true").
		Param(proto.HeaderParameter("Authorization", "OAuth … (RSA-SHA1 signed)").DataType("string")).
		Metadata(metaPublic, true).
		Returns(http.StatusOK, "oauth_token=…&oauth_token_secret=…&oauth_callback_confirmed=true (form-encoded)", nil).
		Returns(http.StatusNotImplemented, notOn, Error{}), tagOAuth1, 400, 401, 413, 503))
	proto.Route(doc(proto.POST("/access-token").To(o.accessToken).
		Doc("OAuth 1.0a: trade an authorized request token and its oauth_verifier for an access token bound to the user who allowed it. "+signedDoc+", oauth_token, oauth_verifier. Answers application/x-www-form-urlencoded oauth_token, oauth_token_secret").
		Param(proto.HeaderParameter("Authorization", "OAuth … (RSA-SHA1 signed)").DataType("string")).
		Metadata(metaPublic, true).
		Returns(http.StatusOK, "oauth_token=…&oauth_token_secret=… (form-encoded)", nil).
		Returns(http.StatusNotImplemented, notOn, Error{}), tagOAuth1, 401, 413, 503))

	ws := new(restful.WebService)
	ws.Path("/api/v1/oauth1").Produces(restful.MIME_JSON)
	ws.Route(doc(ws.GET("/authorize").To(answer(o.describe)).Operation("describe").
		Doc("Who asks: the application behind a request token awaiting your decision (what the consent page at /oauth/1.0a/authorize shows)").
		Param(ws.QueryParameter("oauth_token", "the request token").DataType("string").Required(true)).
		Writes(oauth1.Pending{}).
		Returns(http.StatusOK, "the pending request", oauth1.Pending{}).
		Returns(http.StatusNotImplemented, notOn, Error{}), tagOAuth1, 400, 401, 403, 404, 409, 503))
	ws.Route(doc(ws.POST("/authorize").To(answer(o.decide)).Operation("decide").Consumes(restful.MIME_JSON).
		Doc("Allow or deny an application's request token; answers where to send the browser (the callback, with oauth_verifier when allowed). Needs a Bearer token: applications cannot authorize applications").
		Reads(OAuth1Decision{}).
		Writes(OAuth1Redirect{}).
		Returns(http.StatusOK, "decided", OAuth1Redirect{}).
		Returns(http.StatusNotImplemented, notOn, Error{}), tagOAuth1, 400, 401, 403, 404, 409, 413, 503))
	apps := new(restful.WebService)
	apps.Path("/api/v1/user/applications").Produces(restful.MIME_JSON)
	apps.Route(doc(apps.GET("").To(answer(o.applications)).Operation("applications").
		Doc("The applications (OAuth 1.0a consumers, e.g. Bitbucket Data Center) you allowed to act as you").
		Writes([]oauth1.Application{}).
		Returns(http.StatusOK, "authorized applications", []oauth1.Application{}).
		Returns(http.StatusNotImplemented, notOn, Error{}), tagOAuth1, 401, 403, 503))
	apps.Route(doc(apps.DELETE("/{key}").To(answer(o.revoke)).Operation("revoke").
		Doc("Revoke an application's access at once: every access token it holds for you stops working").
		Param(apps.PathParameter("key", "the application's consumer key").DataType("string")).
		Returns(http.StatusNoContent, "revoked", nil).
		Returns(http.StatusNotImplemented, notOn, Error{}), tagOAuth1, 401, 403, 404, 503))
	return []*restful.WebService{proto, ws, apps}
}

func (o *OAuth1Resources) off(req *restful.Request, resp *restful.Response) bool {
	if o.p == nil {
		writeError(req, resp, errOAuth1Off)
		return true
	}
	return false
}

func (o *OAuth1Resources) requestToken(req *restful.Request, resp *restful.Response) {
	if o.off(req, resp) {
		return
	}
	o.writeForm(req, resp)(o.p.RequestToken(req.Request))
}

func (o *OAuth1Resources) accessToken(req *restful.Request, resp *restful.Response) {
	if o.off(req, resp) {
		return
	}
	o.writeForm(req, resp)(o.p.AccessToken(req.Request))
}

// writeForm answers a protocol endpoint: form-encoded on success (it
// carries credentials: never cached), the error shape otherwise.
func (o *OAuth1Resources) writeForm(req *restful.Request, resp *restful.Response) func(url.Values, error) {
	return func(v url.Values, err error) {
		if err != nil {
			if pipeline.PublicMessage(err) != "" && StatusOf(err) == http.StatusUnauthorized {
				resp.Header().Set("WWW-Authenticate", `OAuth realm="kontinuous"`)
			}
			writeError(req, resp, err)
			return
		}
		h := resp.Header()
		h.Set("Content-Type", mimeForm)
		h.Set("Cache-Control", "no-store")
		resp.WriteHeader(http.StatusOK)
		_, _ = resp.Write([]byte(v.Encode())) // the client may have gone
	}
}

// user is the authenticated user of a JSON route, once the provider is
// known to be configured.
func (o *OAuth1Resources) user(req *restful.Request) (auth.Identity, error) {
	if o.p == nil {
		return auth.Identity{}, errOAuth1Off
	}
	return auth.FromContext(req.Request.Context())
}

// errOAuth1Off answers every OAuth 1.0a route of a server without
// consumers.
var errOAuth1Off = pipeline.Errorf(pipeline.ErrNotImplemented, "the OAuth 1.0a provider is not configured on this server (--oauth1-consumers)")

func (o *OAuth1Resources) describe(req *restful.Request, _ *restful.Response) (int, any, error) {
	id, err := o.user(req)
	if err != nil {
		return 0, nil, err
	}
	p, err := o.p.Describe(req.Request.Context(), id, req.QueryParameter("oauth_token"))
	return http.StatusOK, p, err
}

func (o *OAuth1Resources) decide(req *restful.Request, resp *restful.Response) (int, any, error) {
	id, err := o.user(req)
	if err != nil {
		return 0, nil, err
	}
	var in OAuth1Decision
	if err := decodeJSON(req, &in); err != nil {
		return 0, nil, err
	}
	to, err := o.p.Decide(req.Request.Context(), id, in.Token, in.Allow)
	if err != nil {
		return 0, nil, err
	}
	resp.Header().Set("Cache-Control", "no-store")
	return http.StatusOK, OAuth1Redirect{Redirect: to}, nil
}

func (o *OAuth1Resources) applications(req *restful.Request, _ *restful.Response) (int, any, error) {
	id, err := o.user(req)
	if err != nil {
		return 0, nil, err
	}
	apps, err := o.p.Applications(req.Request.Context(), id)
	return http.StatusOK, apps, err
}

func (o *OAuth1Resources) revoke(req *restful.Request, _ *restful.Response) (int, any, error) {
	id, err := o.user(req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, o.p.Revoke(req.Request.Context(), id, req.PathParameter("key"))
}
