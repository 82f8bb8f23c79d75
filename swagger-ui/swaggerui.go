// Package swaggerui serves Swagger UI at /apidocs, with its assets embedded
// in the binary (github.com/swaggest/swgui's v5emb): it works offline.
package swaggerui

import (
	"net/http"

	"github.com/swaggest/swgui"
	"github.com/swaggest/swgui/v5emb"
)

// BasePath is where the UI is mounted.
const BasePath = "/apidocs/"

// Handler returns the Swagger UI for the spec at specPath. "Authorize"
// takes the token (with or without the "Bearer " prefix: the UI adds it),
// and the token is kept across reloads of the page in the browser only.
func Handler(specPath string) http.Handler {
	ui := v5emb.NewHandlerWithConfig(swgui.Config{
		Title:       "Kontinuous API",
		SwaggerJSON: specPath,
		BasePath:    BasePath,
		ShowTopBar:  false,
		SettingsUI: map[string]string{
			"persistAuthorization": "true",
			"tryItOutEnabled":      "true",
			// Accept a bare token in "Authorize": add the Bearer scheme.
			"requestInterceptor": `function(req) {
				var a = req.headers && req.headers.Authorization;
				if (a && !/^bearer\s/i.test(a)) { req.headers.Authorization = "Bearer " + a.trim(); }
				return req;
			}`,
		},
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/apidocs" {
			// Relative asset URLs need the trailing slash.
			http.Redirect(w, r, BasePath, http.StatusMovedPermanently)
			return
		}
		ui.ServeHTTP(w, r)
	})
}
