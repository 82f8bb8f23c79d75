package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"
)

// WebhookOutcome says what a delivery did.
type WebhookOutcome string

// Webhook outcomes.
const (
	// WebhookCreated: a build was queued (HTTP 201).
	WebhookCreated WebhookOutcome = "created"
	// WebhookDuplicate: a redelivery; the original build (HTTP 200).
	WebhookDuplicate WebhookOutcome = "duplicate"
	// WebhookPong: a ping (HTTP 200).
	WebhookPong WebhookOutcome = "pong"
	// WebhookIgnored: valid but makes no build (HTTP 202).
	WebhookIgnored WebhookOutcome = "ignored"
)

// WebhookResult is the reply to a delivery.
type WebhookResult struct {
	Outcome WebhookOutcome `json:"outcome"`
	Reason  string         `json:"reason,omitempty"`
	Build   *Build         `json:"build,omitempty"`
}

// errBadSignature is the one answer to a delivery that is not proven to
// come from the forge, whether or not the pipeline exists.
func errBadSignature() error {
	return Errorf(ErrUnauthorized, "webhook signature does not match")
}

// WebhookTarget checks, before a delivery's body is read, that owner/repo
// is a pipeline that can take deliveries. An absent pipeline gets the
// answer a bad signature gets: anonymous callers learn nothing about
// which pipelines exist.
func (s *Service) WebhookTarget(ctx context.Context, owner, repo string) error {
	if err := s.ValidateRepoName(owner, repo); err != nil {
		return err
	}
	p, err := s.cfg.Store.GetPipeline(ctx, owner, repo)
	if errors.Is(err, ErrNotFound) || err == nil && p.WebhookSecret == "" {
		return errBadSignature()
	}
	return err
}

// HandleWebhook verifies and acts on a forge delivery for owner/repo.
// The signature is checked before anything is parsed or stored. A
// delivery is remembered by a hash of its signed body (for the store's
// delivery window), so replaying a signed body under a new or empty
// delivery id makes no new build.
func (s *Service) HandleWebhook(ctx context.Context, owner, repo string, req WebhookRequest) (WebhookResult, error) {
	p, f, err := s.deliveryTarget(ctx, owner, repo, req)
	if err != nil {
		return WebhookResult{}, err
	}
	ev, more, err := parseDelivery(f, req, p.WebhookSecret)
	if err != nil {
		return WebhookResult{}, err
	}
	if ev.Kind == "ping" {
		return WebhookResult{Outcome: WebhookPong}, nil
	}
	if !s.namesPipeline(p, ev) {
		return WebhookResult{}, Invalid("repository", "the payload names %s/%s (id %d), not this pipeline's repository", ev.RepoOwner, ev.RepoName, ev.RepoID)
	}
	if !slices.Contains(p.Events, ev.Kind) {
		return WebhookResult{Outcome: WebhookIgnored, Reason: "the pipeline is not subscribed to " + ev.Kind}, nil
	}
	if reason, ignored := ignoredEvent(ev); ignored {
		return WebhookResult{Outcome: WebhookIgnored, Reason: reason}, nil
	}
	b, err := s.deliveryBuild(ctx, f, p, ev, req.Body)
	if err != nil {
		return WebhookResult{}, err
	}
	nb, err := s.cfg.Engine.Trigger(ctx, p, b)
	if errors.Is(err, ErrConflict) && nb.Number > 0 {
		return WebhookResult{Outcome: WebhookDuplicate, Build: &nb}, nil
	}
	if err != nil {
		return WebhookResult{}, err
	}
	s.triggerFurther(ctx, p, b, more)
	return WebhookResult{Outcome: WebhookCreated, Build: &nb}, nil
}

// deliveryTarget returns the pipeline a delivery is for and the forge that
// must verify it. Every way of not finding one answers as a bad signature:
// a delivery does not learn which pipelines exist.
func (s *Service) deliveryTarget(ctx context.Context, owner, repo string, req WebhookRequest) (Pipeline, Forge, error) {
	if err := s.ValidateRepoName(owner, repo); err != nil {
		return Pipeline{}, nil, err
	}
	p, err := s.cfg.Store.GetPipeline(ctx, owner, repo)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			// Same answer as a bad signature: don't reveal which exist.
			return Pipeline{}, nil, errBadSignature()
		}
		return Pipeline{}, nil, err
	}
	f := s.forges.Default()
	if req.Forge != "" {
		var ok bool
		if f, ok = s.forges.Get(req.Forge); !ok {
			return Pipeline{}, nil, errBadSignature()
		}
	}
	if ForgeOf(s.forges, p.OwnerUserID) != f.Name() {
		// A delivery in another forge's format than the pipeline's.
		return Pipeline{}, nil, errBadSignature()
	}
	return p, f, nil
}

// parseDelivery verifies and parses a delivery: its first event, and the
// further ones of a forge that sends several in one (a push naming
// several branches). A delivery id is required.
func parseDelivery(f Forge, req WebhookRequest, secret string) (WebhookEvent, []WebhookEvent, error) {
	var more []WebhookEvent
	ev, err := f.ParseWebhook(req, secret)
	if mp, ok := f.(WebhookEventsParser); ok && err == nil {
		var evs []WebhookEvent
		if evs, err = mp.ParseWebhookEvents(req, secret); err == nil {
			ev, more = evs[0], evs[1:]
		}
	}
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			return WebhookEvent{}, nil, errBadSignature()
		}
		return WebhookEvent{}, nil, err
	}
	if strings.TrimSpace(req.Delivery) == "" {
		return WebhookEvent{}, nil, Invalid("delivery", "a delivery id is required")
	}
	return ev, more, nil
}

// ignoredEvent says why a verified event of a subscribed kind makes no
// build (ignored=true), if it does not.
func ignoredEvent(ev WebhookEvent) (reason string, ignored bool) {
	switch ev.Kind {
	case EventPush:
		if ev.Deleted {
			return "branch deletion", true
		}
		if ev.Tag {
			return "tag push", true
		}
	case EventPullRequest:
		if ev.Action != "opened" && ev.Action != "synchronize" && ev.Action != "reopened" {
			return "pull_request action " + ev.Action, true
		}
	case EventDeployment:
	default:
		return "event " + ev.Kind, true
	}
	return "", false
}

// deliveryBuild is the build a delivery's event asks for, with its commit
// (expanded to the full SHA where the forge sends short ones) and branch
// checked. The delivery id is not signed: the signed body is what
// identifies a delivery (a redelivery carries the same body).
func (s *Service) deliveryBuild(ctx context.Context, f Forge, p Pipeline, ev WebhookEvent, body []byte) (Build, error) {
	sum := sha256.Sum256(body)
	b := Build{Event: ev.Kind, Branch: ev.Branch, Commit: ev.Commit, Author: ev.Author, DeliveryID: "sha256-" + hex.EncodeToString(sum[:]), Fork: ev.Fork}
	if b.Commit == "" || strings.Trim(b.Commit, "0") == "" {
		return Build{}, Invalid("after", "the payload names no commit")
	}
	if len(b.Commit) < 40 {
		// A forge that sends short hashes (Bitbucket's pull requests):
		// the build records the full SHA.
		full, err := s.expandCommit(ctx, f, p, b.Commit)
		if err != nil {
			return Build{}, err
		}
		b.Commit = full
	}
	if err := ValidateRef("commit", b.Commit); err != nil {
		return Build{}, err
	}
	if b.Branch != "" {
		if err := ValidateRef("branch", b.Branch); err != nil {
			return Build{}, err
		}
	}
	return b, nil
}

// triggerFurther starts the further builds of a delivery (a push naming
// several branches), each remembered by the body and its branch. Their
// failures are logged: the delivery's first build answers it.
func (s *Service) triggerFurther(ctx context.Context, p Pipeline, b Build, more []WebhookEvent) {
	for _, m := range more {
		if m.Branch == "" || ValidateRef("branch", m.Branch) != nil || ValidateRef("commit", m.Commit) != nil || len(m.Commit) != 40 {
			continue
		}
		mb := b
		mb.Branch, mb.Commit, mb.DeliveryID = m.Branch, m.Commit, b.DeliveryID+"-"+m.Branch
		if _, err := s.cfg.Engine.Trigger(ctx, p, mb); err != nil && !errors.Is(err, ErrConflict) {
			s.log.Warn("webhook: a further build of the delivery failed", "pipeline", p.Key(), "branch", m.Branch, "err", err)
		}
	}
}

// CommitExpander is implemented by a forge whose webhooks carry shortened
// commit hashes: ExpandCommit returns the full SHA.
type CommitExpander interface {
	ExpandCommit(ctx context.Context, tok ForgeToken, owner, name, hash string) (string, error)
}

// expandCommit returns the full SHA of hash through the pipeline owner's
// token.
func (s *Service) expandCommit(ctx context.Context, f Forge, p Pipeline, hash string) (string, error) {
	ce, ok := f.(CommitExpander)
	if !ok || s.cfg.Engine == nil {
		return hash, nil
	}
	tok, err := s.cfg.Engine.ownerToken(ctx, p)
	if err != nil {
		return "", err
	}
	return ce.ExpandCommit(ctx, tok, p.Owner, p.Repo, hash)
}

// namesPipeline reports whether the delivery is about p's repository. The
// forge's repository id decides when the pipeline has one recorded: a
// repository deleted and recreated (or another renamed) under the same
// name is another repository, and a payload without an id cannot prove
// it is the same one. Names are compared only for pipelines recorded
// without an id.
func (s *Service) namesPipeline(p Pipeline, ev WebhookEvent) bool {
	if p.RepoID != 0 {
		return ev.RepoID == p.RepoID
	}
	return strings.EqualFold(ev.RepoOwner, p.Owner) && strings.EqualFold(ev.RepoName, p.Repo)
}

// ManualTrigger is the body of a build started from the UI or CLI.
type ManualTrigger struct {
	Author string `json:"author"`
	Branch string `json:"branch,omitempty"`
}

// TriggerBuild starts a build of a branch head (default branch when
// empty), pinning the head's commit SHA.
func (s *Service) TriggerBuild(ctx context.Context, c Caller, owner, repo, event string, t ManualTrigger) (Build, error) {
	c, err := s.forPipeline(ctx, c, owner, repo)
	if err != nil {
		return Build{}, err
	}
	if event != EventDashboard && event != EventCLI {
		return Build{}, Invalid("X-Custom-Event", "%q: use dashboard or cli", event)
	}
	if t.Branch != "" {
		if err := ValidateRef("branch", t.Branch); err != nil {
			return Build{}, err
		}
	}
	if err := s.authorize(ctx, c, owner, repo, PermPush); err != nil {
		return Build{}, err
	}
	p, err := s.pipelineOf(ctx, c, owner, repo)
	if err != nil {
		return Build{}, err
	}
	branch := t.Branch
	if branch == "" {
		branch = p.DefaultBranch
		if branch == "" {
			r, err := s.scm(c.UserID).Repository(ctx, c.Token, p.Owner, p.Repo)
			if err != nil {
				return Build{}, err
			}
			branch = r.DefaultBranch
		}
	}
	sha, err := s.scm(c.UserID).BranchHead(ctx, c.Token, p.Owner, p.Repo, branch)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Build{}, Invalid("branch", "branch %q does not exist", branch)
		}
		return Build{}, err
	}
	author := t.Author
	if author == "" {
		author = c.Login
	}
	return s.cfg.Engine.Trigger(ctx, p, Build{Event: event, Branch: branch, Commit: sha, Author: author})
}

// RestartBuild makes a new build of the same commit.
func (s *Service) RestartBuild(ctx context.Context, c Caller, owner, repo string, number int) (Build, error) {
	if err := s.authorize(ctx, c, owner, repo, PermPush); err != nil {
		return Build{}, err
	}
	p, err := s.pipelineOf(ctx, c, owner, repo)
	if err != nil {
		return Build{}, err
	}
	old, err := s.cfg.Store.GetBuild(ctx, owner, repo, number)
	if err != nil {
		return Build{}, err
	}
	return s.cfg.Engine.Trigger(ctx, p, Build{Event: old.Event, Branch: old.Branch, Commit: old.Commit, Author: c.Login, Fork: old.Fork})
}

// CancelBuild stops a build.
func (s *Service) CancelBuild(ctx context.Context, c Caller, owner, repo string, number int) (Build, error) {
	if err := s.authorize(ctx, c, owner, repo, PermPush); err != nil {
		return Build{}, err
	}
	return s.cfg.Engine.Cancel(ctx, owner, repo, number)
}

// ContinueStage approves a waiting wait stage.
func (s *Service) ContinueStage(ctx context.Context, c Caller, owner, repo string, number, index int) (Build, error) {
	if err := s.authorize(ctx, c, owner, repo, PermPush); err != nil {
		return Build{}, err
	}
	return s.cfg.Engine.Continue(ctx, owner, repo, number, index)
}

// RunFromStage re-runs a finished build from stage index.
func (s *Service) RunFromStage(ctx context.Context, c Caller, owner, repo string, number, index int) (Build, error) {
	if err := s.authorize(ctx, c, owner, repo, PermPush); err != nil {
		return Build{}, err
	}
	return s.cfg.Engine.RunFrom(ctx, owner, repo, number, index)
}

// StageLog returns a stage's stored log (read access).
func (s *Service) StageLog(ctx context.Context, c Caller, owner, repo string, number, index int) (Stage, []byte, error) {
	st, err := s.GetStage(ctx, c, owner, repo, number, index)
	if err != nil {
		return Stage{}, nil, err
	}
	data, err := s.cfg.Logs.Read(ctx, LogRef{Pipeline: Key(owner, repo), Build: number, Stage: index})
	if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLogPruned) {
		return st, nil, nil
	}
	return st, data, err
}

// FollowStageLog streams a stage's log lines until the stage's log ends.
// A stage that has not started yet (or a build not yet laid out) is
// waited for.
func (s *Service) FollowStageLog(ctx context.Context, c Caller, owner, repo string, number, index int, fn func([]byte) error) error {
	b, err := s.GetBuild(ctx, c, owner, repo, number)
	if err != nil {
		return err
	}
	startedOrOver := func(b Build) (started, over bool) {
		if i := stagePos(&b, index); i >= 0 {
			st := b.Stages[i].Status
			if st != StatusPending && st != StatusWaiting {
				return true, false
			}
		} else if len(b.Stages) > 0 {
			return false, true // no such stage
		}
		return false, b.Status.Done()
	}
	started, over := startedOrOver(b)
	if !started && !over {
		werr := s.cfg.Store.WatchBuild(ctx, owner, repo, number, func(nb Build) bool {
			started, over = startedOrOver(nb)
			return !started && !over
		})
		if werr != nil && ctx.Err() == nil {
			return werr
		}
	}
	if !started {
		if len(b.Stages) > 0 && stagePos(&b, index) < 0 {
			return Errorf(ErrNotFound, "build %d has no stage %d", number, index)
		}
		return nil
	}
	ref := LogRef{Pipeline: Key(owner, repo), Build: number, Stage: index}
	for attempt := 0; ; attempt++ {
		err := s.cfg.Logs.Follow(ctx, ref, fn)
		if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrLogPruned) || attempt == 50 {
			if errors.Is(err, ErrLogPruned) {
				return err
			}
			if errors.Is(err, ErrNotFound) {
				return nil // the stage ended without writing a log
			}
			return err
		}
		// The runner marks the stage RUNNING just before it creates the
		// log: give it a moment.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}
