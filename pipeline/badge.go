package pipeline

import (
	"context"
	"sync"
	"time"
)

// badgeVisibilityTTL is how long a repository's visibility is believed:
// badges are fetched often (every view of a README), the forge is not
// asked each time.
const badgeVisibilityTTL = time.Minute

// Badges answers build-status badges. Only public repositories have one:
// a private repository, a missing pipeline, an invalid name or a forge
// that cannot say whether the repository is public all give the same
// answer, so that a badge never reveals that a private pipeline exists.
type Badges struct {
	svc *Service
	mu  sync.Mutex
	vis map[string]visibility // by Key(owner, repo)
}

type visibility struct {
	public bool
	at     time.Time
}

// NewBadges returns the badge use case of svc.
func NewBadges(svc *Service) *Badges {
	return &Badges{svc: svc, vis: map[string]visibility{}}
}

// maxBadgeScan bounds the builds read to find a branch's latest build.
const maxBadgeScan = 1000

// Status returns what the badge of owner/repo shows: the status of its
// latest build, on branch when branch is not empty ("" when there is no
// such build). ok is false when there is nothing to show (see Badges);
// callers must then answer alike whatever the reason.
func (b *Badges) Status(ctx context.Context, owner, repo, branch string) (st Status, ok bool) {
	if b.svc.ValidateRepoName(owner, repo) != nil || len(branch) > 255 {
		return "", false
	}
	store := b.svc.cfg.Store
	p, err := store.GetPipeline(ctx, owner, repo)
	if err != nil || !b.public(ctx, p) {
		return "", false
	}
	before := 0
	for scanned := 0; scanned < maxBadgeScan; {
		builds, err := store.ListBuilds(ctx, p.Owner, p.Repo, 200, before)
		if err != nil {
			return "", false
		}
		for _, bd := range builds {
			if branch == "" || bd.Branch == branch {
				return bd.Status, true
			}
			before = bd.Number
		}
		if len(builds) < 200 {
			break
		}
		scanned += len(builds)
	}
	return "", true
}

// public reports whether p's repository is public, asking the forge with
// the pipeline owner's token (cached for badgeVisibilityTTL).
func (b *Badges) public(ctx context.Context, p Pipeline) bool {
	key := p.Key()
	b.mu.Lock()
	v, ok := b.vis[key]
	b.mu.Unlock()
	if ok && time.Since(v.at) < badgeVisibilityTTL {
		return v.public
	}
	u, err := b.svc.cfg.Store.GetUser(ctx, p.OwnerUserID)
	if err != nil || !u.Token.Valid() {
		return false
	}
	r, err := b.svc.scm(u.ID).Repository(ctx, u.Token, p.Owner, p.Repo)
	if err != nil {
		return false // not cached: a forge error is not an answer
	}
	b.mu.Lock()
	if len(b.vis) > 10000 {
		b.vis = map[string]visibility{}
	}
	b.vis[key] = visibility{public: !r.Private, at: time.Now()}
	b.mu.Unlock()
	return !r.Private
}
