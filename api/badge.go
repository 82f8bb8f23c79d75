package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

const tagBadges = "badges"

// BadgeService finds the status a badge shows; *pipeline.Badges
// implements it. ok false means "nothing to show" for any reason.
type BadgeService interface {
	Status(ctx context.Context, owner, repo, branch string) (st pipeline.Status, ok bool)
}

// BadgeResources serves GET /api/v1/pipelines/{owner}/{repo}/badge.svg.
type BadgeResources struct{ badges BadgeService }

// NewBadgeResources returns the badge resource.
func NewBadgeResources(badges BadgeService) *BadgeResources {
	return &BadgeResources{badges: badges}
}

// WebServices implements Resource.
func (r *BadgeResources) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1/pipelines/{owner}/{repo}/badge.svg").Produces("image/svg+xml")
	ws.Route(doc(ws.GET("").To(r.badge).
		Doc("The latest build's status as an SVG badge").
		Notes("For README files: `![build](https://ci.example.com/api/v1/pipelines/acme/app/badge.svg?branch=main)`. "+
			"No token is needed. Only public repositories have a badge: a private repository, a missing pipeline or a bad name "+
			"all get the same grey \"unknown\" badge (200), so that a badge never reveals a private pipeline. "+
			"Texts: passing, failing, canceled, running, pending, waiting, no builds, unknown. Cache-Control: no-cache with an ETag.").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Param(ws.QueryParameter("branch", "the latest build of this branch (default: of any branch)").DataType("string")).
		Returns(http.StatusOK, "the badge (image/svg+xml)", nil).
		Returns(http.StatusNotModified, "unchanged since the ETag given in If-None-Match", nil).
		Metadata(metaPublic, true), tagBadges))
	return []*restful.WebService{ws}
}

// badgeLooks maps a status to the badge's text and colour.
var badgeLooks = map[pipeline.Status][2]string{
	pipeline.StatusSuccess:  {"passing", "#4c1"},
	pipeline.StatusFail:     {"failing", "#e05d44"},
	pipeline.StatusCanceled: {"canceled", "#9f9f9f"},
	pipeline.StatusRunning:  {"running", "#dfb317"},
	pipeline.StatusPending:  {"pending", "#dfb317"},
	pipeline.StatusWaiting:  {"waiting", "#007ec6"},
	"":                      {"no builds", "#9f9f9f"},
}

func (r *BadgeResources) badge(req *restful.Request, resp *restful.Response) {
	st, ok := r.badges.Status(req.Request.Context(), req.PathParameter(pOwner), req.PathParameter(pRepo), req.QueryParameter("branch"))
	look, known := badgeLooks[st]
	if !ok || !known {
		look = [2]string{"unknown", "#9f9f9f"}
	}
	svg := BadgeSVG("build", look[0], look[1])
	sum := sha256.Sum256(svg)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	h := resp.Header()
	h.Set("Content-Type", "image/svg+xml; charset=utf-8")
	// Always revalidated (GitHub's image proxy honours it): a badge must
	// follow builds; the ETag keeps unchanged ones cheap.
	h.Set("Cache-Control", "no-cache, max-age=0, must-revalidate")
	h.Set("ETag", etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if req.Request.Header.Get("If-None-Match") == etag {
		resp.WriteHeader(http.StatusNotModified)
		return
	}
	resp.WriteHeader(http.StatusOK)
	_, _ = resp.Write(svg) // the client may be gone
}

// BadgeSVG draws a flat two-part badge: label on grey, message on color.
func BadgeSVG(label, message, color string) []byte {
	// Verdana 11px averages about 7 px a character; 10 px of padding.
	lw, mw := 7*len(label)+10, 7*len(message)+10
	w := lw + mw
	l, m := html.EscapeString(label), html.EscapeString(message)
	return fmt.Appendf(nil, `<svg xmlns="http://www.w3.org/2000/svg" width="%[1]d" height="20" role="img" aria-label="%[4]s: %[5]s">`+
		`<title>%[4]s: %[5]s</title>`+
		`<linearGradient id="s" x2="0" y2="100%%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>`+
		`<clipPath id="r"><rect width="%[1]d" height="20" rx="3" fill="#fff"/></clipPath>`+
		`<g clip-path="url(#r)"><rect width="%[2]d" height="20" fill="#555"/><rect x="%[2]d" width="%[3]d" height="20" fill="%[6]s"/><rect width="%[1]d" height="20" fill="url(#s)"/></g>`+
		`<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">`+
		`<text x="%[7]d" y="14">%[4]s</text><text x="%[8]d" y="14">%[5]s</text></g></svg>`+"\n",
		w, lw, mw, l, m, html.EscapeString(color), lw/2, lw+mw/2)
}
