package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/kontinuous/kontinuous/pipeline"
)

// workspace is one build's directories.
type workspace struct {
	root string // <WorkDir>/<owner>/<repo>/<build>
	src  string // the checkout
	home string // HOME of the build's commands
	tmp  string // TMPDIR of the build's commands
}

// workspace returns the build's workspace, cloning the repository at the
// build's commit if this is the build's first stage.
func (x *Executor) workspace(ctx context.Context, job pipeline.StageJob, log io.Writer) (workspace, error) {
	root, err := x.buildDir(job.Owner, job.Repo, job.BuildNumber)
	if err != nil {
		return workspace{}, err
	}
	ws := workspace{root: root, src: filepath.Join(root, "src"), home: filepath.Join(root, "home"), tmp: filepath.Join(root, "tmp")}
	unlock, err := x.lock(ctx, root)
	if err != nil {
		return workspace{}, err
	}
	defer unlock()
	// The marker is written once the checkout is complete; without it a
	// src left by a failed or interrupted clone is removed and redone.
	done := filepath.Join(root, ".cloned")
	if _, err := os.Stat(done); err == nil {
		return ws, nil
	}
	if err := removeAll(ws.src); err != nil {
		return workspace{}, fmt.Errorf("local executor: clean workspace: %w", err)
	}
	for _, d := range []string{ws.home, ws.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return workspace{}, fmt.Errorf("local executor: create workspace: %w", err)
		}
	}
	if err := clone(ctx, job, ws.src, log); err != nil {
		_ = removeAll(ws.src) // best effort: the error that matters is the clone's
		return workspace{}, err
	}
	if err := os.WriteFile(done, nil, 0o600); err != nil {
		return workspace{}, fmt.Errorf("local executor: create workspace: %w", err)
	}
	return ws, nil
}

var commitRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// clone checks out job.Commit of job.CloneURL into dir.
func clone(ctx context.Context, job pipeline.StageJob, dir string, log io.Writer) error {
	u, err := url.Parse(job.CloneURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return pipeline.Invalid("clone_url", "the build's clone URL is not an HTTP(S) URL")
	}
	// Credentials travel as basic auth, never in the URL, so that no error
	// or log line that quotes the URL can carry them.
	u.User = nil
	shown := u.String()
	commit := strings.ToLower(job.Commit)
	if !commitRE.MatchString(commit) {
		return pipeline.Invalid("commit", "%q is not a full commit hash", job.Commit)
	}
	var auth transport.AuthMethod
	if job.CloneToken != "" {
		auth = &githttp.BasicAuth{Username: job.CloneUser, Password: job.CloneToken}
	}
	logf(log, "cloning %s at %s", shown, commit)
	repo, err := git.PlainCloneContext(ctx, dir, false, &git.CloneOptions{
		URL:        shown,
		Auth:       auth,
		NoCheckout: true,
		Tags:       git.NoTags,
	})
	if err != nil {
		return cloneError(ctx, shown, job.CloneToken, err)
	}
	hash := plumbing.NewHash(commit)
	if _, err := repo.CommitObject(hash); err != nil {
		// Not on a branch: a pull request from a fork, or a commit only a
		// direct fetch can reach. Try both before giving up.
		for _, spec := range []config.RefSpec{
			config.RefSpec(commit + ":refs/kontinuous/commit"),
			"+refs/pull/*/head:refs/remotes/origin/pull/*",
		} {
			err := repo.FetchContext(ctx, &git.FetchOptions{RefSpecs: []config.RefSpec{spec}, Auth: auth, Tags: git.NoTags})
			if ctx.Err() != nil {
				return stopped(ctx)
			}
			if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
				continue // the server may not allow it; the check below decides
			}
			if _, err := repo.CommitObject(hash); err == nil {
				break
			}
		}
		if _, err := repo.CommitObject(hash); err != nil {
			return pipeline.Errorf(pipeline.ErrNotFound, "commit %s not found in %s", commit, shown)
		}
	}
	wt, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("local executor: checkout %s: %w", commit, err)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: hash, Force: true}); err != nil {
		if ctx.Err() != nil {
			return stopped(ctx)
		}
		return pipeline.Errorf(pipeline.ErrUpstream, "checkout %s: %s", commit, scrub(err.Error(), job.CloneToken))
	}
	logf(log, "checked out %s", commit)
	return nil
}

// cloneError explains a failed clone without the token.
func cloneError(ctx context.Context, shown, token string, err error) error {
	switch {
	case ctx.Err() != nil:
		return stopped(ctx)
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return pipeline.Errorf(pipeline.ErrUnauthorized, "clone %s: the repository refused the pipeline owner's token", shown)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return pipeline.Errorf(pipeline.ErrNotFound, "clone %s: repository not found (or the pipeline owner's token cannot read it)", shown)
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return pipeline.Errorf(pipeline.ErrNotFound, "clone %s: the repository is empty", shown)
	}
	return pipeline.Errorf(pipeline.ErrUpstream, "clone %s: %s", shown, scrub(err.Error(), token))
}

// scrub removes a secret from a message that quotes a library's error.
func scrub(msg, secret string) string {
	if len(secret) < pipeline.MinSecretLen {
		return msg
	}
	return strings.ReplaceAll(msg, secret, pipeline.Mask)
}

// inside resolves rel (a spec path) under dir, refusing absolute paths and
// paths that leave dir, also through symbolic links.
func inside(dir, rel, field string) (string, error) {
	if rel == "" {
		rel = "."
	}
	if filepath.IsAbs(rel) || !filepath.IsLocal(rel) {
		return "", pipeline.Invalid(field, "%q must be a path inside the repository", rel)
	}
	p := filepath.Join(dir, rel)
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", pipeline.Invalid(field, "%q does not exist in the repository", rel)
	}
	if err != nil {
		return "", fmt.Errorf("local executor: %s: %w", field, err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("local executor: %s: %w", field, err)
	}
	if r, err := filepath.Rel(realDir, real); err != nil || !filepath.IsLocal(r) && r != "." {
		return "", pipeline.Invalid(field, "%q must be a path inside the repository", rel)
	}
	return p, nil
}
