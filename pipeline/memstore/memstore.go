// Package memstore is an in-memory pipeline.Store: the same behaviour as
// the etcd store (pipeline/etcdstore) as far as the store contract suite
// (pipeline/storetest) checks it, for tests of Service and the engine that
// need no etcd. Nothing is persisted, secrets are not sealed (they never
// leave the process), and it serves one process only.
package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/kontinuous/kontinuous/pipeline"
)

// defaultPage is ListBuilds' page size when limit <= 0.
const defaultPage = 50

// Store is an in-memory pipeline.Store, safe for concurrent use. Its zero
// value is not usable: call New.
type Store struct {
	mu        sync.Mutex
	rev       int64         // bumped on every write (Build.Revision)
	changed   chan struct{} // closed and replaced on every write
	users     map[string]pipeline.User
	pipes     map[string]pipeline.Pipeline             // by pipeline.Key
	secrets   map[string]map[string]pipeline.SecretSet // pipeline key → name → set
	builds    map[string]map[int]storedBuild           // pipeline key → number → build
	counters  map[string]int                           // survive DeletePipeline: numbers never reused
	delivered map[string]int                           // pipeline key + "/" + delivery → number
	ext       extras                                   // account links and user locks (links.go)
}

type storedBuild struct {
	b   pipeline.Build
	rev int64
}

var _ pipeline.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		changed: make(chan struct{}), users: map[string]pipeline.User{}, pipes: map[string]pipeline.Pipeline{},
		secrets: map[string]map[string]pipeline.SecretSet{}, builds: map[string]map[int]storedBuild{},
		counters: map[string]int{}, delivered: map[string]int{},
	}
}

// wrote bumps the revision and wakes watchers (s.mu held).
func (s *Store) wrote() int64 {
	s.rev++
	close(s.changed)
	s.changed = make(chan struct{})
	return s.rev
}

func keyOf(owner, repo string) (string, error) {
	if owner == "" || repo == "" || strings.ContainsAny(owner+repo, "/\x00") {
		return "", fmt.Errorf("memstore: owner/repo %q/%q: %w", owner, repo, pipeline.ErrInvalid)
	}
	return pipeline.Key(owner, repo), nil
}

func checkNumber(n int) error {
	if n < 1 {
		return fmt.Errorf("memstore: build number %d: %w", n, pipeline.ErrInvalid)
	}
	return nil
}

// buildKey is the pipeline key of owner/repo, checked with number.
func buildKey(owner, repo string, number int) (string, error) {
	pk, err := keyOf(owner, repo)
	if err == nil {
		err = checkNumber(number)
	}
	return pk, err
}

// build returns the stored build pk#number (ErrNotFound when there is
// none). s.mu must be held.
func (s *Store) build(pk string, number int) (storedBuild, error) {
	sb, ok := s.builds[pk][number]
	if !ok {
		return storedBuild{}, notFound("build %s#%d", pk, number)
	}
	return sb, nil
}

func notFound(format string, args ...any) error {
	return fmt.Errorf("memstore: "+format+": %w", append(args, pipeline.ErrNotFound)...)
}

// PutUser creates or replaces a user.
func (s *Store) PutUser(_ context.Context, u pipeline.User) error {
	if u.ID == "" {
		return fmt.Errorf("memstore: user without id: %w", pipeline.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.ID] = u
	s.wrote()
	return nil
}

// GetUser returns a user by id.
func (s *Store) GetUser(_ context.Context, id string) (pipeline.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return pipeline.User{}, notFound("user %s", id)
	}
	return u, nil
}

// CreatePipeline stores a new pipeline (ErrConflict if owner/repo exists),
// giving it an ID and Created unless set.
func (s *Store) CreatePipeline(_ context.Context, p pipeline.Pipeline) (pipeline.Pipeline, error) {
	pk, err := keyOf(p.Owner, p.Repo)
	if err != nil {
		return pipeline.Pipeline{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pipes[pk]; ok {
		return pipeline.Pipeline{}, fmt.Errorf("memstore: pipeline %s: %w", pk, pipeline.ErrConflict)
	}
	if p.ID == "" {
		p.ID = uuid.NewString()
	}
	if p.Created == 0 {
		p.Created = pipeline.Now()
	}
	p.LatestBuild = nil
	p = clonePipeline(p)
	s.pipes[pk] = p
	s.wrote()
	return clonePipeline(p), nil
}

// GetPipeline returns a pipeline with LatestBuild filled.
func (s *Store) GetPipeline(_ context.Context, owner, repo string) (pipeline.Pipeline, error) {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return pipeline.Pipeline{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pipes[pk]
	if !ok {
		return pipeline.Pipeline{}, notFound("pipeline %s", pk)
	}
	return s.withLatest(pk, p), nil
}

// withLatest is a copy of p with its newest build's summary (s.mu held).
func (s *Store) withLatest(pk string, p pipeline.Pipeline) pipeline.Pipeline {
	p = clonePipeline(p)
	p.LatestBuild = nil
	newest := 0
	for n := range s.builds[pk] {
		newest = max(newest, n)
	}
	if newest > 0 {
		b := s.builds[pk][newest].b
		sum := b.Summary()
		p.LatestBuild = &sum
	}
	return p
}

// ListPipelines returns every pipeline with LatestBuild filled, by key.
func (s *Store) ListPipelines(_ context.Context) ([]pipeline.Pipeline, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := slices.Sorted(maps.Keys(s.pipes))
	out := make([]pipeline.Pipeline, 0, len(keys))
	for _, pk := range keys {
		out = append(out, s.withLatest(pk, s.pipes[pk]))
	}
	return out, nil
}

// UpdatePipeline applies fn to the stored pipeline; fn cannot change its
// ID, Created or secret list, and changing owner/repo (beyond case) is
// ErrInvalid.
func (s *Store) UpdatePipeline(_ context.Context, owner, repo string, fn func(*pipeline.Pipeline) error) (pipeline.Pipeline, error) {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return pipeline.Pipeline{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.pipes[pk]
	if !ok {
		return pipeline.Pipeline{}, notFound("pipeline %s", pk)
	}
	p := s.withLatest(pk, cur)
	if err := fn(&p); err != nil {
		return pipeline.Pipeline{}, err
	}
	if p.Key() != pk {
		return pipeline.Pipeline{}, pipeline.Invalid("owner/repo", "a pipeline's repository cannot be changed")
	}
	p.ID, p.Created, p.Secrets = cur.ID, cur.Created, slices.Clone(cur.Secrets)
	stored := clonePipeline(p)
	stored.LatestBuild = nil
	s.pipes[pk] = stored
	s.wrote()
	return s.withLatest(pk, stored), nil
}

// DeletePipeline removes the pipeline with its builds, secrets and
// delivery records; its build counter stays (numbers are never reused).
func (s *Store) DeletePipeline(_ context.Context, owner, repo string) error {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pipes[pk]; !ok {
		return notFound("pipeline %s", pk)
	}
	delete(s.pipes, pk)
	delete(s.secrets, pk)
	delete(s.builds, pk)
	for k := range s.delivered {
		if strings.HasPrefix(k, pk+"/") {
			delete(s.delivered, k)
		}
	}
	s.wrote()
	return nil
}

// PutSecret creates or replaces one secret set and keeps the pipeline's
// Secrets name list in step.
func (s *Store) PutSecret(_ context.Context, owner, repo string, set pipeline.SecretSet) error {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return err
	}
	if set.Name == "" || strings.ContainsAny(set.Name, "/\x00") {
		return fmt.Errorf("memstore: secret name %q: %w", set.Name, pipeline.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pipes[pk]
	if !ok {
		return notFound("pipeline %s", pk)
	}
	set.Data = maps.Clone(set.Data)
	set.Keys = slices.Sorted(maps.Keys(set.Data))
	if s.secrets[pk] == nil {
		s.secrets[pk] = map[string]pipeline.SecretSet{}
	}
	s.secrets[pk][set.Name] = set
	if i, found := slices.BinarySearch(p.Secrets, set.Name); !found {
		p.Secrets = slices.Insert(slices.Clone(p.Secrets), i, set.Name)
		s.pipes[pk] = p
	}
	s.wrote()
	return nil
}

// GetSecret returns one secret set with its data.
func (s *Store) GetSecret(_ context.Context, owner, repo, name string) (pipeline.SecretSet, error) {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return pipeline.SecretSet{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set, ok := s.secrets[pk][name]
	if !ok {
		return pipeline.SecretSet{}, notFound("secret %s of %s", name, pk)
	}
	return cloneSecret(set), nil
}

// ListSecrets returns every secret set of a pipeline, with data, by name.
func (s *Store) ListSecrets(_ context.Context, owner, repo string) ([]pipeline.SecretSet, error) {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pipes[pk]; !ok {
		return nil, notFound("pipeline %s", pk)
	}
	out := []pipeline.SecretSet{}
	for _, name := range slices.Sorted(maps.Keys(s.secrets[pk])) {
		out = append(out, cloneSecret(s.secrets[pk][name]))
	}
	return out, nil
}

// DeleteSecret removes one secret set and its name from the pipeline.
func (s *Store) DeleteSecret(_ context.Context, owner, repo, name string) error {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.secrets[pk][name]; !ok {
		return notFound("secret %s of %s", name, pk)
	}
	delete(s.secrets[pk], name)
	if p, ok := s.pipes[pk]; ok {
		p.Secrets = slices.DeleteFunc(slices.Clone(p.Secrets), func(n string) bool { return n == name })
		s.pipes[pk] = p
	}
	s.wrote()
	return nil
}

// CreateBuild stores b as the pipeline's next build. A delivery that
// already made a build gets that build and an error wrapping ErrConflict.
func (s *Store) CreateBuild(_ context.Context, owner, repo string, b pipeline.Build) (pipeline.Build, error) {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return pipeline.Build{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pipes[pk]
	if !ok {
		return pipeline.Build{}, notFound("create build of %s: no such pipeline", pk)
	}
	dk := pk + "/" + b.DeliveryID
	if b.DeliveryID != "" {
		if n, ok := s.delivered[dk]; ok {
			if old, ok := s.builds[pk][n]; ok {
				return cloneBuild(old.b), fmt.Errorf("memstore: create build of %s: delivery already made build %d: %w", pk, n, pipeline.ErrConflict)
			}
		}
	}
	if b.ID == "" {
		b.ID = uuid.NewString()
	}
	if b.Created == 0 {
		b.Created = pipeline.Now()
	}
	s.counters[pk]++
	b.Number, b.Owner, b.Repo = s.counters[pk], p.Owner, p.Repo
	if s.builds[pk] == nil {
		s.builds[pk] = map[int]storedBuild{}
	}
	if b.DeliveryID != "" {
		s.delivered[dk] = b.Number
	}
	b.Revision = 0
	s.builds[pk][b.Number] = storedBuild{b: cloneBuild(b), rev: s.wrote()}
	return cloneBuild(b), nil
}

// GetBuild returns one build with its stages.
func (s *Store) GetBuild(_ context.Context, owner, repo string, number int) (pipeline.Build, error) {
	pk, err := buildKey(owner, repo, number)
	if err != nil {
		return pipeline.Build{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, err := s.build(pk, number)
	if err != nil {
		return pipeline.Build{}, err
	}
	return cloneBuild(sb.b), nil
}

// ListBuilds returns builds newest first (numbers < before if before > 0),
// up to limit (50 if <= 0), with their Revision and without Spec.
// ErrNotFound if the pipeline does not exist.
func (s *Store) ListBuilds(_ context.Context, owner, repo string, limit, before int) ([]pipeline.Build, error) {
	pk, err := keyOf(owner, repo)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultPage
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pipes[pk]; !ok {
		return nil, notFound("list builds of %s: no such pipeline", pk)
	}
	nums := slices.Collect(maps.Keys(s.builds[pk]))
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	out := make([]pipeline.Build, 0, min(limit, len(nums)))
	for _, n := range nums {
		if len(out) == limit {
			break
		}
		if before > 0 && n >= before {
			continue
		}
		sb := s.builds[pk][n]
		b := cloneBuild(sb.b)
		b.Spec, b.Revision = nil, sb.rev
		out = append(out, b)
	}
	return out, nil
}

// UpdateBuild applies fn to the stored build; fn cannot change its
// identity (ID, Number, Owner, Repo, DeliveryID).
func (s *Store) UpdateBuild(_ context.Context, owner, repo string, number int, fn func(*pipeline.Build) error) (pipeline.Build, error) {
	pk, err := buildKey(owner, repo, number)
	if err != nil {
		return pipeline.Build{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.build(pk, number)
	if err != nil {
		return pipeline.Build{}, err
	}
	b := cloneBuild(cur.b)
	if err := fn(&b); err != nil {
		return pipeline.Build{}, err
	}
	b.ID, b.Number, b.Owner, b.Repo, b.DeliveryID = cur.b.ID, cur.b.Number, cur.b.Owner, cur.b.Repo, cur.b.DeliveryID
	b.Revision = 0
	s.builds[pk][number] = storedBuild{b: cloneBuild(b), rev: s.wrote()}
	return b, nil
}

// DeleteBuild removes one build and its delivery record; its number is
// not reused.
func (s *Store) DeleteBuild(_ context.Context, owner, repo string, number int) error {
	pk, err := buildKey(owner, repo, number)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.build(pk, number)
	if err != nil {
		return err
	}
	delete(s.builds[pk], number)
	if cur.b.DeliveryID != "" {
		delete(s.delivered, pk+"/"+cur.b.DeliveryID)
	}
	s.wrote()
	return nil
}

// ActiveBuilds lists the builds of every pipeline whose status is not
// final.
func (s *Store) ActiveBuilds(_ context.Context) ([]pipeline.Build, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []pipeline.Build{}
	for _, pk := range slices.Sorted(maps.Keys(s.builds)) {
		for _, n := range slices.Sorted(maps.Keys(s.builds[pk])) {
			if b := s.builds[pk][n].b; !b.Status.Done() {
				out = append(out, cloneBuild(b))
			}
		}
	}
	return out, nil
}

// WatchBuild calls fn with the build's current value, then with each new
// version, until fn returns false (nil), ctx ends (ctx's error) or the
// build is deleted (ErrNotFound).
func (s *Store) WatchBuild(ctx context.Context, owner, repo string, number int, fn func(pipeline.Build) bool) error {
	pk, err := buildKey(owner, repo, number)
	if err != nil {
		return err
	}
	var last int64
	for {
		s.mu.Lock()
		cur, ok := s.builds[pk][number]
		changed := s.changed
		s.mu.Unlock()
		if !ok {
			return notFound("watch build %s#%d", pk, number)
		}
		if cur.rev > last {
			last = cur.rev
			if !fn(cloneBuild(cur.b)) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func clonePipeline(p pipeline.Pipeline) pipeline.Pipeline {
	p.Events = slices.Clone(p.Events)
	p.Secrets = slices.Clone(p.Secrets)
	p.Vars = maps.Clone(p.Vars)
	if p.Notif != nil {
		n := make([]pipeline.Notif, len(p.Notif))
		for i, x := range p.Notif {
			x.Secrets, x.Metadata = slices.Clone(x.Secrets), maps.Clone(x.Metadata)
			n[i] = x
		}
		p.Notif = n
	}
	if p.LatestBuild != nil {
		l := *p.LatestBuild
		p.LatestBuild = &l
	}
	return p
}

func cloneSecret(set pipeline.SecretSet) pipeline.SecretSet {
	set.Data, set.Keys = maps.Clone(set.Data), slices.Clone(set.Keys)
	return set
}

func cloneBuild(b pipeline.Build) pipeline.Build {
	if b.Stages != nil {
		st := make([]pipeline.Stage, len(b.Stages))
		for i, x := range b.Stages {
			x.Params = cloneAny(x.Params)
			x.Labels, x.Vars = maps.Clone(x.Labels), maps.Clone(x.Vars)
			x.Artifacts, x.Secrets = slices.Clone(x.Artifacts), slices.Clone(x.Secrets)
			st[i] = x
		}
		b.Stages = st
	}
	b.Spec = slices.Clone(b.Spec)
	return b
}

// cloneAny deep-copies the maps and slices of decoded YAML/JSON values.
func cloneAny(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneAny(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	case []string:
		return slices.Clone(x)
	case map[string]string:
		return maps.Clone(x)
	}
	return v // scalars are values
}
