package pipeline

import "context"

// BuildEvent is one change of a followed build: its new version, or its
// deletion (Deleted, with only Number set).
type BuildEvent struct {
	Build   Build
	Deleted bool
}

// BuildFollower is implemented by stores that can stream build changes
// from the watch they already run (etcdstore fans one etcd watch out in
// memory), so that a follower costs no watch of its own. Defined here,
// where Service consumes it; Store stays as it is for stores without a
// watch.
type BuildFollower interface {
	// FollowBuilds calls fn first with the current builds (number 0: the
	// pipeline's newest limit builds, newest first, as ListBuilds lists
	// them; number > 0: that one build with its stages), then with every
	// change, until ctx ends (nil) or fn fails. ErrNotFound when the
	// pipeline (or build) does not exist.
	FollowBuilds(ctx context.Context, owner, repo string, number, limit int, fn func(BuildEvent) error) error
}

// FollowBuilds streams a pipeline's builds (number 0) or one build to fn
// (read access): the current state first, then every change.
func (s *Service) FollowBuilds(ctx context.Context, c Caller, owner, repo string, number, limit int, fn func(BuildEvent) error) error {
	if err := s.authorize(ctx, c, owner, repo, PermRead); err != nil {
		return err
	}
	f, ok := s.cfg.Store.(BuildFollower)
	if !ok {
		return Errorf(ErrNotImplemented, "this store cannot stream builds")
	}
	return f.FollowBuilds(ctx, owner, repo, number, limit, fn)
}
