package etcdstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// maxOpsPerTxn stays under etcd's default --max-txn-ops (128).
const maxOpsPerTxn = 100

// CreatePipeline stores p; ErrConflict if owner/repo exists (in any case).
// It gives p a new random ID unless one is set, sets Created if zero, and
// starts with no secrets (PutSecret adds them).
func (s *Store) CreatePipeline(ctx context.Context, p pipeline.Pipeline) (pipeline.Pipeline, error) {
	pk, err := pipelineKey(p.Owner, p.Repo)
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "create pipeline")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if p.ID == "" {
		p.ID = uuid.NewString()
	}
	if p.Created == 0 {
		p.Created = pipeline.Now()
	}
	p.Secrets = []string{}
	p.LatestBuild = nil
	key := s.pipelineKeyOf(pk)
	rec, err := s.toPipelineRecord(&p, key, nil, nil)
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "create pipeline %s", pk)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "create pipeline %s", pk)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(raw))).
		Commit()
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "create pipeline %s", pk)
	}
	if !resp.Succeeded {
		return pipeline.Pipeline{}, s.wrap(pipeline.ErrConflict, "create pipeline %s: already exists", pk)
	}
	s.wrote(resp.Header.Revision)
	return p, nil
}

// GetPipeline returns a pipeline with LatestBuild filled, in one round trip.
func (s *Store) GetPipeline(ctx context.Context, owner, repo string) (pipeline.Pipeline, error) {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "get pipeline")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.pipelineKeyOf(pk)
	latest, bounded := s.latestBuildOp(pk)
	resp, err := s.readTxnRetrying(ctx, []clientv3.Op{clientv3.OpGet(key), latest})
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "get pipeline %s", pk)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return pipeline.Pipeline{}, s.wrap(pipeline.ErrNotFound, "get pipeline %s", pk)
	}
	p, err := s.decodePipeline(kvs[0])
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "get pipeline %s", pk)
	}
	if p.LatestBuild, err = s.latestFrom(ctx, pk, resp.Responses[1], bounded); err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "get pipeline %s", pk)
	}
	return p, nil
}

// pipelineOf is GetPipeline's answer for the stored pipeline pkv (nil:
// none) whose newest build is lkv (nil: none).
func (s *Store) pipelineOf(pk string, pkv, lkv *mvccpb.KeyValue) (pipeline.Pipeline, error) {
	if pkv == nil {
		return pipeline.Pipeline{}, s.wrap(pipeline.ErrNotFound, "get pipeline %s", pk)
	}
	p, err := s.decodePipeline(pkv)
	if err == nil {
		p.LatestBuild, err = s.decodeLatest(pk, lkv)
	}
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "get pipeline %s", pk)
	}
	return p, nil
}

// decodeLatest is the summary of the newest build kv (nil: none).
func (s *Store) decodeLatest(pk string, kv *mvccpb.KeyValue) (*pipeline.BuildSummary, error) {
	if kv == nil {
		return nil, nil
	}
	b, err := s.builds.decode(kv)
	if err != nil {
		return nil, err
	}
	s.newest.see(pk, b.Number)
	sum := b.Summary()
	return &sum, nil
}

// rawPipeline is a pipeline's record (nil: no such pipeline) and its
// newest builds as etcd holds them, read at revision rev; more says
// older builds were left out.
type rawPipeline struct {
	pkv    *mvccpb.KeyValue
	builds []*mvccpb.KeyValue
	more   bool
	rev    int64
}

// readPipelineRaw reads pk's record and its newest limit builds in one
// transaction (one attempt, bounded by attemptCtx).
func (s *Store) readPipelineRaw(ctx context.Context, pk string, limit int) (rawPipeline, error) {
	prefix := s.buildsPrefix(pk)
	actx, cancel := s.attemptCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(actx).Then(
		clientv3.OpGet(s.pipelineKeyOf(pk)),
		clientv3.OpGet(prefix, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(int64(limit))),
	).Commit()
	if err != nil {
		return rawPipeline{}, err
	}
	r := rawPipeline{rev: resp.Header.Revision}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		r.pkv = kvs[0]
	}
	br := resp.Responses[1].GetResponseRange()
	r.builds, r.more = br.Kvs, br.More
	return r, nil
}

// ListPipelines returns every pipeline, sorted by owner/repo, with
// LatestBuild filled: one range read, then one transaction per hundred
// pipelines for their latest builds.
func (s *Store) ListPipelines(ctx context.Context) ([]pipeline.Pipeline, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.pipelinesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, s.wrap(err, "list pipelines")
	}
	out := make([]pipeline.Pipeline, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		p, err := s.decodePipeline(kv)
		if err != nil {
			return nil, s.wrap(err, "list pipelines: %s", kv.Key)
		}
		out = append(out, p)
	}
	for start := 0; start < len(out); start += maxOpsPerTxn {
		chunk := out[start:min(start+maxOpsPerTxn, len(out))]
		ops := make([]clientv3.Op, len(chunk))
		bounded := make([]bool, len(chunk))
		for i := range chunk {
			ops[i], bounded[i] = s.latestBuildOp(chunk[i].Key())
		}
		tr, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, s.wrap(err, "list pipelines: latest builds")
		}
		for i := range chunk {
			if chunk[i].LatestBuild, err = s.latestFrom(ctx, chunk[i].Key(), tr.Responses[i], bounded[i]); err != nil {
				return nil, s.wrap(err, "list pipelines: latest build of %s", chunk[i].Key())
			}
		}
	}
	return out, nil
}

// UpdatePipeline applies fn to the stored pipeline with optimistic
// concurrency and returns the result with LatestBuild filled. fn may run
// several times. It refuses (ErrInvalid) a change of owner/repo other than
// letter case; ID, Created and Secrets (kept by PutSecret/DeleteSecret)
// are not changed by fn.
func (s *Store) UpdatePipeline(ctx context.Context, owner, repo string, fn func(*pipeline.Pipeline) error) (pipeline.Pipeline, error) {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "update pipeline")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.pipelineKeyOf(pk)
	var result pipeline.Pipeline
	latest, bounded := s.latestBuildOp(pk)
	tr, err := s.update(ctx, key, nil, func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		var old pipelineRecord
		if err := json.Unmarshal(cur.Value, &old); err != nil {
			return nil, fmt.Errorf("decode pipeline: %w", err)
		}
		oldPlain, err := s.fromPipelineRecord(&old, key)
		if err != nil {
			return nil, err
		}
		// A second decode gives fn a copy sharing nothing with oldPlain.
		p, err := s.decodePipeline(cur)
		if err != nil {
			return nil, err
		}
		if err := fn(&p); err != nil {
			return nil, err
		}
		if p.Key() != pk {
			return nil, pipeline.Invalid("owner/repo", "a pipeline's repository cannot be changed")
		}
		p.ID, p.Created, p.Secrets, p.LatestBuild = oldPlain.ID, oldPlain.Created, oldPlain.Secrets, nil
		rec, err := s.toPipelineRecord(&p, key, &old, &oldPlain)
		if err != nil {
			return nil, err
		}
		raw, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		result = p
		return []clientv3.Op{clientv3.OpPut(key, string(raw)), latest}, nil
	})
	if err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "update pipeline %s", pk)
	}
	var latestResp *pb.ResponseOp
	if tr != nil {
		latestResp = tr.Responses[1]
	} else {
		// Confirmed after an interrupted answer: read the latest build apart.
		r, err := s.cli.Txn(ctx).Then(latest).Commit()
		if err != nil {
			return pipeline.Pipeline{}, s.wrap(err, "update pipeline %s", pk)
		}
		latestResp = r.Responses[0]
	}
	if result.LatestBuild, err = s.latestFrom(ctx, pk, latestResp, bounded); err != nil {
		return pipeline.Pipeline{}, s.wrap(err, "update pipeline %s", pk)
	}
	return result, nil
}

// DeletePipeline removes the pipeline, its builds, secrets and delivery
// records in one transaction. The build counter stays, so numbers are not
// reused if the pipeline is created again.
func (s *Store) DeletePipeline(ctx context.Context, owner, repo string) error {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return s.wrap(err, "delete pipeline")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.pipelineKeyOf(pk)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(
			clientv3.OpDelete(key),
			clientv3.OpDelete(s.buildsPrefix(pk), clientv3.WithPrefix()),
			clientv3.OpDelete(s.activePrefix(pk), clientv3.WithPrefix()),
			clientv3.OpDelete(s.secretsPrefix(pk), clientv3.WithPrefix()),
			clientv3.OpDelete(s.deliveriesPrefix(pk), clientv3.WithPrefix()),
		).Commit()
	if err != nil {
		return s.wrap(err, "delete pipeline %s", pk)
	}
	s.newest.forget(pk)
	s.builds.forgetPrefix(s.buildsPrefix(pk))
	if resp.Succeeded {
		s.wrote(resp.Header.Revision)
	}
	if !resp.Succeeded {
		return s.wrap(pipeline.ErrNotFound, "delete pipeline %s", pk)
	}
	return nil
}

// decodePipeline decodes a stored pipeline, from the cache when kv's
// revision was decoded before.
func (s *Store) decodePipeline(kv *mvccpb.KeyValue) (pipeline.Pipeline, error) {
	if p, ok := s.pipelines.get(kv); ok {
		return p, nil
	}
	var rec pipelineRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return pipeline.Pipeline{}, fmt.Errorf("decode pipeline: %w", err)
	}
	p, err := s.fromPipelineRecord(&rec, string(kv.Key))
	if err != nil {
		return p, err
	}
	s.pipelines.put(kv, p)
	return p, nil
}

// latestBuildOp reads the newest build of a pipeline: build keys sort
// newest first, so it is the first key of the range. The range ends a
// window below the newest number this store has seen (see newestHints);
// bounded says whether it does.
func (s *Store) latestBuildOp(pk string) (op clientv3.Op, bounded bool) {
	end, bounded := s.buildsRangeEnd(pk, s.newest.get(pk)-newestWindow)
	return clientv3.OpGet(s.buildsPrefix(pk), clientv3.WithRange(end), clientv3.WithLimit(1)), bounded
}

// latestFrom reads the summary of the newest build from latestBuildOp's
// answer, reading the open range when a bounded one came back empty.
func (s *Store) latestFrom(ctx context.Context, pk string, r *pb.ResponseOp, bounded bool) (*pipeline.BuildSummary, error) {
	kvs := r.GetResponseRange().Kvs
	if len(kvs) == 0 && bounded {
		resp, err := s.cli.Get(ctx, s.buildsPrefix(pk), clientv3.WithPrefix(), clientv3.WithLimit(1))
		if err != nil {
			return nil, err
		}
		s.saw(resp.Header.Revision, resp.Kvs)
		kvs = resp.Kvs
	}
	if len(kvs) == 0 {
		return nil, nil
	}
	b, err := s.builds.decode(kvs[0])
	if err != nil {
		return nil, err
	}
	s.newest.see(pk, b.Number)
	sum := b.Summary()
	return &sum, nil
}

// update reads key and gives its current value to apply, then commits
// apply's ops if key's ModRevision is unchanged. On conflict it retries
// with the value the failed transaction read (bounded by MaxAttempts and
// ctx). It returns the committed transaction's response, or nil when the
// commit was confirmed after an interrupted answer (see below).
//
// etcd can fail a request while it changes leader ("leader changed", a
// lost connection): the transaction may or may not have been applied.
// update then reads the key of apply's first operation back: if it holds
// what was written (or is gone, for a delete), the write happened; if not,
// it applies fn again to the fresh value. So a brief loss of a member
// neither fails the caller nor applies its change twice.
//
// first, when not nil, is key's value from the read cache: it saves the
// first read (the transaction compares its ModRevision, so a value that
// is no longer current only costs a retry with the one etcd returns).
func (s *Store) update(ctx context.Context, key string, first *mvccpb.KeyValue, apply func(cur *mvccpb.KeyValue) ([]clientv3.Op, error)) (*clientv3.TxnResponse, error) {
	cur := first
	if cur == nil {
		resp, err := s.readRetrying(ctx, key)
		if err != nil {
			return nil, err
		}
		if len(resp.Kvs) == 0 {
			return nil, pipeline.ErrNotFound
		}
		cur = resp.Kvs[0]
	}
	for attempt := 0; ; attempt++ {
		ops, err := apply(cur)
		if err != nil {
			return nil, err
		}
		actx, acancel := s.attemptCtx(ctx)
		tr, err := s.cli.Txn(actx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision)).
			Then(ops...).
			Else(clientv3.OpGet(key)).
			Commit()
		acancel()
		if err != nil {
			if !isUnavailable(err) || ctx.Err() != nil || len(ops) == 0 {
				return nil, err
			}
			applied, aerr := s.wasApplied(ctx, ops[0])
			if aerr != nil {
				return nil, errors.Join(err, aerr)
			}
			if applied {
				return nil, nil
			}
			r, rerr := s.readRetrying(ctx, key)
			if rerr != nil {
				return nil, rerr
			}
			if len(r.Kvs) == 0 {
				return nil, pipeline.ErrNotFound
			}
			cur = r.Kvs[0]
		} else if tr.Succeeded {
			s.wrote(tr.Header.Revision)
			return tr, nil
		} else {
			kvs := tr.Responses[0].GetResponseRange().Kvs
			s.saw(tr.Header.Revision, kvs)
			if len(kvs) == 0 {
				return nil, pipeline.ErrNotFound
			}
			cur = kvs[0]
		}
		if attempt+1 >= s.opts.MaxAttempts {
			return nil, fmt.Errorf("%w: gave up after %d concurrent changes", pipeline.ErrConflict, attempt+1)
		}
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
	}
}

// readRetrying reads key, retrying while etcd is briefly unavailable
// (until ctx ends).
func (s *Store) readRetrying(ctx context.Context, key string) (*clientv3.GetResponse, error) {
	for attempt := 0; ; attempt++ {
		actx, acancel := s.attemptCtx(ctx)
		resp, err := s.cli.Get(actx, key)
		acancel()
		if err == nil {
			s.saw(resp.Header.Revision, resp.Kvs)
		}
		if err == nil || !isUnavailable(err) || ctx.Err() != nil {
			return resp, err
		}
		if serr := sleepCtx(ctx, unavailableRetryDelay(attempt)); serr != nil {
			return nil, err
		}
	}
}

// wasApplied reads back the key of op (a put or a delete) and reports
// whether it holds what op wrote.
func (s *Store) wasApplied(ctx context.Context, op clientv3.Op) (bool, error) {
	resp, err := s.readRetrying(ctx, string(op.KeyBytes()))
	if err != nil {
		return false, err
	}
	switch {
	case op.IsPut():
		if len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, op.ValueBytes()) {
			s.wrote(resp.Kvs[0].ModRevision)
			return true, nil
		}
	case op.IsDelete():
		if len(resp.Kvs) == 0 {
			s.wrote(resp.Header.Revision) // at or after the delete
			return true, nil
		}
	}
	return false, nil
}

// attemptCtx bounds one attempt of a retried operation to a part of the
// remaining time: a request caught by a leader change is held by etcd
// until its own request timeout (about 7 s), longer than our whole
// operation may take; a shorter attempt leaves time to find out whether it
// was applied and to try again with the new leader.
func (s *Store) attemptCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	d := max(s.opts.OpTimeout/3, time.Second)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// unavailableRetryDelay spaces retries while etcd elects a leader.
func unavailableRetryDelay(attempt int) time.Duration {
	return min(100*time.Millisecond<<min(attempt, 4), time.Second)
}
