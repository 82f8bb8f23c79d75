package swaggerui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestUIServesPageAndEmbeddedAssetsOffline(t *testing.T) {
	srv := httptest.NewServer(Handler("/apidocs.json"))
	defer srv.Close()
	for _, c := range []struct{ path, want string }{
		{"/apidocs/", "/apidocs.json"},
		{"/apidocs/", "requestInterceptor"},
		{"/apidocs/swagger-ui-bundle.js", "SwaggerUIBundle"},
	} {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %d, want it to contain %q", c.path, resp.StatusCode, c.want)
		}
	}
	// No asset comes from a CDN.
	resp, _ := http.Get(srv.URL + "/apidocs/")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "cdn") || strings.Contains(string(body), "unpkg") {
		t.Errorf("page loads assets from a CDN:\n%s", body)
	}
}
