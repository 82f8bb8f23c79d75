package main

import (
	"net"
	"net/url"
	"strings"
)

// isLoopbackURL reports whether u points at this machine only
// (localhost, *.localhost, 127.0.0.0/8, ::1).
func isLoopbackURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	host := strings.ToLower(strings.TrimSuffix(p.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// webhookURLProblem says why pipelines cannot be created when the public
// URL (where webhooks are sent) is a loopback address and the forge is
// not on this machine: its webhooks could never arrive. "" when fine.
func webhookURLProblem(publicURL, forgeAPIURL string) string {
	if !isLoopbackURL(publicURL) || isLoopbackURL(forgeAPIURL) {
		return ""
	}
	return "this server's public URL " + publicURL + " is a loopback address, so GitHub (" + forgeAPIURL +
		") could not deliver its webhooks: set --url (KONTINUOUS_URL) to an address GitHub can reach, then create the pipeline"
}
