package etcdstore

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Keys. pk is pipeline.Key(owner, repo), already checked by pipelineKey.

const maxBuildNumber = 9_999_999_998

func (s *Store) pipelinesPrefix() string        { return s.opts.Prefix + "pipelines/" }
func (s *Store) pipelineKeyOf(pk string) string { return s.pipelinesPrefix() + pk }
func (s *Store) counterKey(pk string) string    { return s.opts.Prefix + "counters/" + pk }
func (s *Store) buildsPrefix(pk string) string  { return s.opts.Prefix + "builds/" + pk + "/" }
func (s *Store) buildKey(pk string, n int) string {
	return s.buildsPrefix(pk) + invNumber(n)
}
func (s *Store) activeAllPrefix() string       { return s.opts.Prefix + "active/" }
func (s *Store) activePrefix(pk string) string { return s.activeAllPrefix() + pk + "/" }
func (s *Store) activeKey(pk string, n int) string {
	return s.activePrefix(pk) + invNumber(n)
}
func (s *Store) deliveriesPrefix(pk string) string { return s.opts.Prefix + "deliveries/" + pk + "/" }
func (s *Store) deliveryKey(pk, id string) string  { return s.deliveriesPrefix(pk) + id }
func (s *Store) secretsPrefix(pk string) string    { return s.opts.Prefix + "secrets/" + pk + "/" }
func (s *Store) secretKey(pk, name string) string  { return s.secretsPrefix(pk) + name }
func (s *Store) userKey(id string) string          { return s.opts.Prefix + "users/" + id }
func (s *Store) onceKey(id string) string          { return s.opts.Prefix + "once/" + id }
func (s *Store) revokedPrefix() string             { return s.opts.Prefix + "revoked/" }

// invNumber encodes a build number so that ascending key order is
// descending number order.
func invNumber(n int) string { return fmt.Sprintf("%010d", maxBuildNumber+1-n) }

// pipelineKey checks owner and repo and returns the case-folded key.
func pipelineKey(owner, repo string) (string, error) {
	if err := checkSegment("owner", owner); err != nil {
		return "", err
	}
	if err := checkSegment("repo", repo); err != nil {
		return "", err
	}
	return pipeline.Key(owner, repo), nil
}

// checkSegment refuses values that would break the key layout.
func checkSegment(field, v string) error {
	if v == "" {
		return pipeline.Invalid(field, "must not be empty")
	}
	if len(v) > 256 {
		return pipeline.Invalid(field, "is too long")
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r == '/' || unicode.IsControl(r) }) {
		return pipeline.Invalid(field, "must not contain '/' or control characters")
	}
	return nil
}

func checkNumber(n int) error {
	if n < 1 || n > maxBuildNumber {
		return pipeline.Invalid("buildNumber", "must be between 1 and %d", maxBuildNumber)
	}
	return nil
}

// Sealing. Additional data binds a sealed value to its record's key (less
// the configurable prefix) and field.

func (s *Store) seal(plain, key, field string) (string, error) {
	if plain == "" {
		return "", nil
	}
	sealed, err := s.box.SealStringWith(plain, s.ad(key, field))
	if err != nil {
		return "", fmt.Errorf("seal %s: %w", field, err)
	}
	return sealed, nil
}

func (s *Store) open(sealed, key, field string) (string, error) {
	if sealed == "" {
		return "", nil
	}
	plain, err := s.box.OpenStringWith(sealed, s.ad(key, field))
	if err != nil {
		return "", fmt.Errorf("open %s (was the auth secret changed?): %w", field, err)
	}
	return plain, nil
}

func (s *Store) ad(key, field string) []byte {
	return []byte(strings.TrimPrefix(key, s.opts.Prefix) + "#" + field)
}

// Records: the stored documents.

type pipelineRecord struct {
	ID               string            `json:"id"`
	Owner            string            `json:"owner"`
	Repo             string            `json:"repo"`
	Events           []string          `json:"events"`
	Login            string            `json:"login"`
	Notif            []notifRecord     `json:"notif"`
	Secrets          []string          `json:"secrets"`
	Vars             map[string]string `json:"vars"`
	OwnerUserID      string            `json:"owner_user_id"`
	Forge            string            `json:"forge,omitempty"`
	RepoID           int64             `json:"repo_id"`
	CloneURL         string            `json:"clone_url"`
	DefaultBranch    string            `json:"default_branch"`
	WebhookID        int64             `json:"webhook_id"`
	WebhookSecret    string            `json:"webhook_secret_sealed"`
	DeployKeyID      int64             `json:"deploy_key_id"`
	DeployKeyPublic  string            `json:"deploy_key_public"`
	DeployKeyPrivate string            `json:"deploy_key_private_sealed"`
	ForkSecrets      bool              `json:"fork_secrets"`
	Namespace        string            `json:"namespace"`
	Created          int64             `json:"created"`
}

type notifRecord struct {
	Type     string            `json:"type"`
	Secrets  []string          `json:"secrets"`
	Metadata map[string]string `json:"metadata"`
}

// toPipelineRecord converts p for storage at key; old is the stored
// record it replaces (nil on create), whose sealed values are kept when
// the plaintext did not change.
func (s *Store) toPipelineRecord(p *pipeline.Pipeline, key string, old *pipelineRecord, oldPlain *pipeline.Pipeline) (*pipelineRecord, error) {
	r := &pipelineRecord{
		ID: p.ID, Owner: p.Owner, Repo: p.Repo, Events: p.Events, Login: p.Login,
		Secrets: p.Secrets, Vars: p.Vars, OwnerUserID: p.OwnerUserID, Forge: p.Forge, RepoID: p.RepoID,
		CloneURL: p.CloneURL, DefaultBranch: p.DefaultBranch, WebhookID: p.WebhookID,
		DeployKeyID: p.DeployKeyID, DeployKeyPublic: p.DeployKeyPublic,
		ForkSecrets: p.ForkSecrets, Namespace: p.Namespace, Created: p.Created,
	}
	if p.Notif != nil {
		r.Notif = make([]notifRecord, len(p.Notif))
		for i, n := range p.Notif {
			r.Notif[i] = notifRecord{Type: n.Type, Secrets: n.Secrets, Metadata: n.Metadata}
		}
	}
	var err error
	if old != nil && oldPlain != nil && oldPlain.WebhookSecret == p.WebhookSecret {
		r.WebhookSecret = old.WebhookSecret
	} else if r.WebhookSecret, err = s.seal(p.WebhookSecret, key, "webhook_secret"); err != nil {
		return nil, err
	}
	if old != nil && oldPlain != nil && oldPlain.DeployKeyPrivate == p.DeployKeyPrivate {
		r.DeployKeyPrivate = old.DeployKeyPrivate
	} else if r.DeployKeyPrivate, err = s.seal(p.DeployKeyPrivate, key, "deploy_key_private"); err != nil {
		return nil, err
	}
	return r, nil
}

// legacyForge is the forge of pipelines recorded before pipelines named
// theirs: every one of them was GitHub's.
const legacyForge = "github"

func (s *Store) fromPipelineRecord(r *pipelineRecord, key string) (pipeline.Pipeline, error) {
	p := pipeline.Pipeline{
		ID: r.ID, Owner: r.Owner, Repo: r.Repo, Events: r.Events, Login: r.Login,
		Secrets: r.Secrets, Vars: r.Vars, OwnerUserID: r.OwnerUserID, Forge: r.Forge, RepoID: r.RepoID,
		CloneURL: r.CloneURL, DefaultBranch: r.DefaultBranch, WebhookID: r.WebhookID,
		DeployKeyID: r.DeployKeyID, DeployKeyPublic: r.DeployKeyPublic,
		ForkSecrets: r.ForkSecrets, Namespace: r.Namespace, Created: r.Created,
	}
	if p.Forge == "" {
		p.Forge = legacyForge
	}
	if r.Notif != nil {
		p.Notif = make([]pipeline.Notif, len(r.Notif))
		for i, n := range r.Notif {
			p.Notif[i] = pipeline.Notif{Type: n.Type, Secrets: n.Secrets, Metadata: n.Metadata}
		}
	}
	var err error
	if p.WebhookSecret, err = s.open(r.WebhookSecret, key, "webhook_secret"); err != nil {
		return pipeline.Pipeline{}, err
	}
	if p.DeployKeyPrivate, err = s.open(r.DeployKeyPrivate, key, "deploy_key_private"); err != nil {
		return pipeline.Pipeline{}, err
	}
	return p, nil
}

// buildRecord is a build as stored. Records written by older versions
// may hold fields since removed (stage_tokens): decoding ignores them.
type buildRecord struct {
	ID           string        `json:"id"`
	Number       int           `json:"number"`
	Status       string        `json:"status"`
	Created      int64         `json:"created"`
	Started      int64         `json:"started"`
	Finished     int64         `json:"finished"`
	CurrentStage int           `json:"current_stage"`
	Branch       string        `json:"branch"`
	Commit       string        `json:"commit"`
	Author       string        `json:"author"`
	Event        string        `json:"event"`
	CloneURL     string        `json:"clone_url"`
	Stages       []stageRecord `json:"stages"`
	Owner        string        `json:"owner"`
	Repo         string        `json:"repo"`
	DeliveryID   string        `json:"delivery_id"`
	Fork         bool          `json:"fork"`
	Message      string        `json:"message"`
	Spec         []byte        `json:"spec"`
	Runner       string        `json:"runner"`
	Heartbeat    int64         `json:"heartbeat"`
	// CancelRequested is omitted when false: older records read the same.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Vars every stage has (the template's), kept once; see shareVars.
	Vars map[string]string `json:"vars,omitempty"`
}

type stageRecord struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Type         string            `json:"type"`
	Index        int               `json:"index"`
	Params       map[string]any    `json:"params"`
	Labels       map[string]string `json:"labels"`
	Started      int64             `json:"started"`
	Finished     int64             `json:"finished"`
	Message      string            `json:"message"`
	Status       string            `json:"status"`
	PodNamespace string            `json:"pod_namespace"`
	JobName      string            `json:"job_name"`
	PodName      string            `json:"pod_name"`
	DockerImage  string            `json:"docker_image"`
	Artifacts    []string          `json:"artifacts"`
	Secrets      []string          `json:"secrets"`
	Vars         map[string]string `json:"vars"`
}

func toBuildRecord(b *pipeline.Build) *buildRecord {
	r := &buildRecord{
		ID: b.ID, Number: b.Number, Status: string(b.Status), Created: b.Created,
		Started: b.Started, Finished: b.Finished, CurrentStage: b.CurrentStage,
		Branch: b.Branch, Commit: b.Commit, Author: b.Author, Event: b.Event,
		CloneURL: b.CloneURL, Owner: b.Owner, Repo: b.Repo, DeliveryID: b.DeliveryID,
		Fork: b.Fork, Message: b.Message, Spec: b.Spec,
		Runner: b.Runner, Heartbeat: b.Heartbeat, CancelRequested: b.CancelRequested,
	}
	if b.Stages != nil {
		r.Stages = make([]stageRecord, len(b.Stages))
		for i, st := range b.Stages {
			r.Stages[i] = stageRecord{
				ID: st.ID, Name: st.Name, Type: st.Type, Index: st.Index, Params: st.Params,
				Labels: st.Labels, Started: st.Started, Finished: st.Finished,
				Message: st.Message, Status: string(st.Status), PodNamespace: st.PodNamespace,
				JobName: st.JobName, PodName: st.PodName, DockerImage: st.DockerImage,
				Artifacts: st.Artifacts, Secrets: st.Secrets, Vars: st.Vars,
			}
		}
		shareVars(r)
	}
	return r
}

func fromBuildRecord(r *buildRecord) pipeline.Build {
	b := pipeline.Build{
		ID: r.ID, Number: r.Number, Status: pipeline.Status(r.Status), Created: r.Created,
		Started: r.Started, Finished: r.Finished, CurrentStage: r.CurrentStage,
		Branch: r.Branch, Commit: r.Commit, Author: r.Author, Event: r.Event,
		CloneURL: r.CloneURL, Owner: r.Owner, Repo: r.Repo, DeliveryID: r.DeliveryID,
		Fork: r.Fork, Message: r.Message, Spec: r.Spec,
		Runner: r.Runner, Heartbeat: r.Heartbeat, CancelRequested: r.CancelRequested,
	}
	if r.Stages != nil {
		b.Stages = make([]pipeline.Stage, len(r.Stages))
		for i, st := range r.Stages {
			b.Stages[i] = pipeline.Stage{
				ID: st.ID, Name: st.Name, Type: st.Type, Index: st.Index, Params: st.Params,
				Labels: st.Labels, Started: st.Started, Finished: st.Finished,
				Message: st.Message, Status: pipeline.Status(st.Status), PodNamespace: st.PodNamespace,
				JobName: st.JobName, PodName: st.PodName, DockerImage: st.DockerImage,
				Artifacts: st.Artifacts, Secrets: st.Secrets, Vars: stageVars(r.Vars, st.Vars),
			}
		}
	}
	return b
}

func decodeBuild(raw []byte) (pipeline.Build, error) {
	var r buildRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return pipeline.Build{}, fmt.Errorf("decode build: %w", err)
	}
	return fromBuildRecord(&r), nil
}

type userRecord struct {
	ID           string    `json:"id"`
	Login        string    `json:"login"`
	AccessToken  string    `json:"access_token_sealed"`
	RefreshToken string    `json:"refresh_token_sealed"`
	Expiry       time.Time `json:"expiry"`
	// Expired: the forge refused to refresh the token (connection expired).
	Expired bool  `json:"expired,omitempty"`
	Updated int64 `json:"updated"`
}

type secretRecord struct {
	Name string `json:"name"`
	// Data maps each key to its sealed value.
	Data map[string]string `json:"data_sealed"`
}

func (s *Store) toSecretRecord(set pipeline.SecretSet, key string) (*secretRecord, error) {
	r := &secretRecord{Name: set.Name, Data: make(map[string]string, len(set.Data))}
	for k, v := range set.Data {
		sealed, err := s.box.SealStringWith(v, s.ad(key, "data/"+k))
		if err != nil {
			return nil, fmt.Errorf("seal secret value: %w", err)
		}
		r.Data[k] = sealed
	}
	return r, nil
}

func (s *Store) fromSecretRecord(r *secretRecord, key string) (pipeline.SecretSet, error) {
	set := pipeline.SecretSet{Name: r.Name, Data: make(map[string]string, len(r.Data)), Keys: make([]string, 0, len(r.Data))}
	for k, sealed := range r.Data {
		v, err := s.box.OpenStringWith(sealed, s.ad(key, "data/"+k))
		if err != nil {
			return pipeline.SecretSet{}, fmt.Errorf("open secret value (was the auth secret changed?): %w", err)
		}
		set.Data[k] = v
		set.Keys = append(set.Keys, k)
	}
	slices.Sort(set.Keys)
	return set, nil
}
