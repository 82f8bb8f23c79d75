package pipeline

import "testing"

// A grant covers only what Authorize found: the same pipeline (names
// case-insensitive) and at most the permission checked. A caller built
// without Authorize carries none.
func TestGrantCoversOnlyWhatWasChecked(t *testing.T) {
	g := &grant{owner: "Acme", repo: "App", perm: PermPush}
	for _, c := range []struct {
		owner, repo string
		need        Permission
		want        bool
	}{
		{"acme", "app", PermRead, true},
		{"ACME", "APP", PermPush, true},
		{"acme", "app", PermAdmin, false},
		{"acme", "other", PermRead, false},
		{"other", "app", PermRead, false},
	} {
		if got := g.covers(c.owner, c.repo, c.need); got != c.want {
			t.Errorf("grant push on Acme/App covers %s/%s %v: %v, want %v", c.owner, c.repo, c.need, got, c.want)
		}
	}
	if (Caller{UserID: "github|1"}).granted.covers("acme", "app", PermRead) {
		t.Error("a Caller made without Authorize carries a grant")
	}
}
