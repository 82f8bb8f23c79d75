package api

import (
	"net/http"

	restful "github.com/emicklei/go-restful/v3"
)

const tagForges = "forges"

// Forge is one way to sign in, as GET /api/v1/forges lists it. A forge
// (github, bitbucket) has a login_url the browser is sent to; the element
// named "auth0", present when Auth0 is on, has issuer and audience instead
// (API clients get their tokens from Auth0 themselves).
type Forge struct {
	Name     string `json:"name" description:"github, bitbucket, or auth0"`
	LoginURL string `json:"login_url,omitempty" description:"where a browser starts the forge's login (add ?redirect_uri=)"`
	Issuer   string `json:"issuer,omitempty" description:"auth0 only: the tenant's issuer"`
	Audience string `json:"audience,omitempty" description:"auth0 only: the audience its tokens must carry"`
}

// ForgeResources serves GET /api/v1/forges: what a UI needs to draw its
// sign-in buttons. It needs no token.
type ForgeResources struct{ forges []Forge }

// NewForgeResources lists the enabled forges (and Auth0, when on).
func NewForgeResources(forges []Forge) *ForgeResources {
	if forges == nil {
		forges = []Forge{}
	}
	return &ForgeResources{forges: forges}
}

// WebServices implements Resource.
func (r *ForgeResources) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1/forges").Produces(restful.MIME_JSON)
	ws.Route(doc(ws.GET("").To(r.list).Operation("listForges").
		Doc("The enabled forges with their login URLs, and Auth0's issuer and audience when Auth0 is on (no token needed)").
		Metadata(metaPublic, true).
		Writes([]Forge{}).
		Returns(http.StatusOK, "forges", []Forge{}), tagForges))
	return []*restful.WebService{ws}
}

func (r *ForgeResources) list(_ *restful.Request, resp *restful.Response) {
	resp.Header().Set("Cache-Control", "no-cache")
	writeJSON(resp, http.StatusOK, r.forges)
}
