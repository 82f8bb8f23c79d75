package kube

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Labels on every object the executor creates. Jobs are found again (after
// a restart, or by an operator with kubectl) by these labels.
const (
	LabelPipeline  = "kontinuous.io/pipeline"
	LabelBuild     = "kontinuous.io/build"
	LabelStage     = "kontinuous.io/stage"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "kontinuous"
	// LabelRole marks the clone-token Secrets the executor makes
	// (RoleCloneToken); a stage may never reference one.
	LabelRole = "kontinuous.io/role"
	// RoleCloneToken is LabelRole's value on clone-token Secrets.
	RoleCloneToken = "clone-token"
)

// Annotations carry the exact values labels may have had to shorten.
const (
	annoPipeline  = "kontinuous.io/pipeline"
	annoStageName = "kontinuous.io/stage-name"
	annoCommit    = "kontinuous.io/commit"
	// annoRun tells one run of a stage from a re-run of the same stage of
	// the same build: the stage's Started time. A Job with the same name
	// but another run is stale and is replaced, not adopted.
	annoRun = "kontinuous.io/run"
)

// maxName is the longest Job name: the job controller copies it into the
// batch.kubernetes.io/job-name label of its pods, and label values are
// limited to 63 characters.
const maxName = 63

// dnsSafe lower-cases s and replaces every run of characters other than
// [a-z0-9] by one '-', trimming dashes at both ends.
func dnsSafe(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// shortHash is 8 hex characters of SHA-256 of s.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// baseName is "<owner>-<repo>-<hash>-<build>", DNS-safe, at most max
// characters. The hash of the exact pipeline key keeps names of pipelines
// whose names only differ in characters dnsSafe folds (a_b, a.b) apart.
func baseName(owner, repo string, build, max int) string {
	suffix := "-" + shortHash(pipeline.Key(owner, repo)) + "-" + strconv.Itoa(build)
	prefix := dnsSafe(owner + "-" + repo)
	if prefix == "" {
		prefix = "pipeline"
	}
	if room := max - len(suffix); len(prefix) > room {
		prefix = strings.TrimRight(prefix[:room], "-")
	}
	return prefix + suffix
}

// JobName is the deterministic name of the Job running stage index of build
// of owner/repo: DNS-safe (RFC 1123 label), at most 63 characters, the same
// for the same inputs, and different for different pipelines, builds or
// stages.
func JobName(owner, repo string, build, stage int) string {
	s := "-" + strconv.Itoa(stage)
	return baseName(owner, repo, build, maxName-len(s)) + s
}

// CloneSecretName returns a fresh, unguessable name for a Secret holding
// the clone token of a stage of build of owner/repo:
// "<owner>-<repo>-<hash>-<build>-clone-<16 hex digits from crypto/rand>",
// DNS-safe and at most 63 characters. Nobody can name it in a spec before
// it exists; it is found again by CloneSecretSelector.
func CloneSecretName(owner, repo string, build int) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("kube: random clone secret name: %w", err)
	}
	s := "-clone-" + hex.EncodeToString(r[:])
	return baseName(owner, repo, build, maxName-len(s)) + s, nil
}

// CloneSecretSelector is the label selector of the clone-token Secrets of
// build of owner/repo.
func CloneSecretSelector(owner, repo string, build int) string {
	return fmt.Sprintf("%s=%s,%s=%s,%s=%s", LabelPipeline, PipelineLabel(owner, repo),
		LabelBuild, strconv.Itoa(build), LabelRole, RoleCloneToken)
}

// labelValue turns s into a valid label value (at most 63 characters of
// [A-Za-z0-9._-], starting and ending with an alphanumeric), keeping it
// readable; a value that had to change gets a hash of the original so
// that different inputs stay different.
func labelValue(s string) string {
	valid := len(s) <= 63
	for i, r := range s {
		ok := (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') ||
			((r == '-' || r == '_' || r == '.') && i > 0 && i < len(s)-1)
		if !ok {
			valid = false
			break
		}
	}
	if valid {
		return s
	}
	h := shortHash(s)
	safe := dnsSafe(s)
	if len(safe) > 63-len(h)-1 {
		safe = strings.TrimRight(safe[:63-len(h)-1], "-")
	}
	if safe == "" {
		return h
	}
	return safe + "-" + h
}

// PipelineLabel is the value of the kontinuous.io/pipeline label of
// owner/repo's objects: "owner.repo" case-folded, shortened with a hash when
// it does not fit in a label.
func PipelineLabel(owner, repo string) string {
	return labelValue(strings.ToLower(owner) + "." + strings.ToLower(repo))
}

// Labels returns the labels of the Job (and its pod) running stage index of
// build of owner/repo.
func Labels(owner, repo string, build, stage int) map[string]string {
	return map[string]string{
		LabelPipeline:  PipelineLabel(owner, repo),
		LabelBuild:     strconv.Itoa(build),
		LabelStage:     strconv.Itoa(stage),
		LabelManagedBy: managedBy,
	}
}
