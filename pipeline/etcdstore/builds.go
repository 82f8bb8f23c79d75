package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// defaultPage is ListBuilds' page size when limit <= 0.
const defaultPage = 50

// deliveryLeaseWindow: deliveries share one lease per window, so they are
// remembered between DeliveryTTL and DeliveryTTL+window.
const deliveryLeaseWindow = time.Hour

// CreateBuild stores b as the pipeline's next build. The number is the
// pipeline counter + 1, written in the same transaction as the build (and
// its delivery record), so numbers are unique and gap-free under any
// concurrency and never reused. It sets Number, Owner and Repo (the
// pipeline's display case), ID (a random UUID unless set) and Created (if
// zero). If b.DeliveryID was already recorded for this pipeline, it
// returns the build made for it and an error wrapping ErrConflict.
//
// Concurrent calls for one pipeline are committed together (group
// commit, see createBatcher): one transaction allocates consecutive
// numbers to every waiting build, instead of each caller racing for the
// counter and retrying.
func (s *Store) CreateBuild(ctx context.Context, owner, repo string, b pipeline.Build) (pipeline.Build, error) {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return pipeline.Build{}, s.wrap(err, "create build")
	}
	if b.DeliveryID != "" {
		if err := checkSegment("delivery", b.DeliveryID); err != nil {
			return pipeline.Build{}, s.wrap(err, "create build of %s", pk)
		}
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if b.ID == "" {
		b.ID = uuid.NewString()
	}
	if b.Created == 0 {
		b.Created = pipeline.Now()
	}
	req := &createReq{b: b, ctx: ctx, done: make(chan createRes, 1)}
	s.creates.enqueue(s, pk, req)
	select {
	case r := <-req.done:
		return r.b, r.err
	case <-ctx.Done():
		// The batch may still commit: a retried delivery then finds it.
		return pipeline.Build{}, s.wrap(ctx.Err(), "create build of %s", pk)
	}
}

// Group commit of new builds.
const (
	// maxCreateBatch bounds the builds of one transaction: each takes up
	// to three operations (build, active marker, delivery) of the
	// maxOpsPerTxn, plus the counter.
	maxCreateBatch = (maxOpsPerTxn - 1) / 3
	// maxCreateBatchBytes keeps a batch well under etcd's default request
	// limit (1.5 MiB).
	maxCreateBatchBytes = 1 << 20
)

// createReq is one CreateBuild call waiting for its batch.
type createReq struct {
	b    pipeline.Build
	ctx  context.Context
	done chan createRes // buffered: the committer never blocks on it
}

type createRes struct {
	b   pipeline.Build
	err error
}

// createBatcher queues CreateBuild calls per pipeline. While a pipeline
// has waiting calls, one committer goroutine takes all of them (up to
// maxCreateBatch), allocates consecutive numbers and stores them in one
// transaction; callers arriving meanwhile form the next batch. Under load
// every transaction carries many builds, so the write rate follows etcd's
// transaction rate instead of collapsing into conflicts on the counter.
type createBatcher struct {
	mu     sync.Mutex
	queues map[string]*createQueue
}

// createQueue is one pipeline's waiting calls and what its committer
// learned from its last transaction.
type createQueue struct {
	pending []*createReq
	running bool
	// state is used only by the running committer (handed over under mu).
	state counterState
}

// counterState caches the pipeline and counter as last committed by this
// store, so that a batch needs one round trip when no other writer
// intervened (the transaction compares revisions, so a stale cache only
// costs a retry with the values the failed transaction read).
type counterState struct {
	ok           bool
	owner, repo  string // display case
	pipelineRev  int64  // CreateRevision of the pipeline
	last         int    // counter value
	counterModRv int64  // ModRevision of the counter; 0 = no counter yet
}

func (c *createBatcher) enqueue(s *Store, pk string, r *createReq) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queues == nil {
		c.queues = map[string]*createQueue{}
	}
	q := c.queues[pk]
	if q == nil {
		q = &createQueue{}
		c.queues[pk] = q
	}
	q.pending = append(q.pending, r)
	if !q.running {
		q.running = true
		go s.commitLoop(pk, q)
	}
}

// commitLoop commits q's waiting calls batch after batch until none wait.
func (s *Store) commitLoop(pk string, q *createQueue) {
	for {
		s.creates.mu.Lock()
		n := min(len(q.pending), maxCreateBatch)
		if n == 0 {
			q.running = false
			q.pending = nil
			s.creates.mu.Unlock()
			return
		}
		batch := append([]*createReq(nil), q.pending[:n]...)
		q.pending = q.pending[n:]
		s.creates.mu.Unlock()
		if rest := s.commitBatch(pk, q, batch); len(rest) > 0 {
			s.creates.mu.Lock()
			q.pending = append(rest, q.pending...)
			s.creates.mu.Unlock()
		}
	}
}

// commitBatch stores the builds of batch in one transaction and answers
// each caller. It returns the calls it left for the next batch (over the
// size limit).
func (s *Store) commitBatch(pk string, q *createQueue, batch []*createReq) (rest []*createReq) {
	t := &batchTxn{s: s, pk: pk, q: q}
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- createRes{err: s.wrap(err, "create build of %s", pk)}
			continue
		}
		t.live = append(t.live, r)
	}
	if len(t.live) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	t.ctx = ctx
	t.keys()
	// fresh holds reads of the keys when the cache cannot be trusted; nil
	// means: try the cached counter and assume the deliveries are new.
	var fresh []*pb.ResponseOp
	if !q.state.ok {
		resp, err := s.readTxnRetrying(ctx, t.reads)
		if err != nil {
			return t.fail(err)
		}
		fresh = resp.Responses
	}
	for attempt := 0; ; attempt++ {
		delivered, err := t.load(fresh)
		if err == nil {
			err = t.plan(delivered)
		}
		if err != nil {
			return t.fail(err)
		}
		if t.n == t.q.state.last {
			// Nothing to write: every call was answered without a new build.
			t.answer()
			return t.over
		}
		next, retry, err := t.commit(attempt, fresh)
		switch {
		case err != nil:
			return t.fail(err)
		case !retry:
			return t.over
		}
		fresh = next
	}
}

// batchTxn is one group commit under way (see commitBatch): the calls,
// the keys read and compared, and the plan of the current attempt.
type batchTxn struct {
	s    *Store
	pk   string
	q    *createQueue
	ctx  context.Context
	live []*createReq // calls in this batch
	over []*createReq // calls left for the next batch (size limit)

	pKey, cKey string
	dKeys      []string // distinct delivery keys, in batch order
	reads      []clientv3.Op
	lease      clientv3.LeaseID

	// The current attempt's plan: what each call gets — a new build
	// (results[i] without error), the build another call of this batch
	// makes for the same delivery (dupOf[i] ≥ 0), or the build the
	// delivery made before.
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	results []createRes
	dupOf   []int
	n       int // the counter after the attempt
}

// keys computes the keys the batch reads: pipeline, counter, deliveries.
func (t *batchTxn) keys() {
	s, pk := t.s, t.pk
	t.pKey, t.cKey = s.pipelineKeyOf(pk), s.counterKey(pk)
	seen := map[string]bool{}
	for _, r := range t.live {
		if r.b.DeliveryID == "" {
			continue
		}
		if dk := s.deliveryKey(pk, r.b.DeliveryID); !seen[dk] {
			seen[dk] = true
			t.dKeys = append(t.dKeys, dk)
		}
	}
	t.reads = []clientv3.Op{clientv3.OpGet(t.pKey), clientv3.OpGet(t.cKey)}
	for _, dk := range t.dKeys {
		t.reads = append(t.reads, clientv3.OpGet(dk))
	}
}

// load takes fresh reads (if any) into the queue's counter state and
// returns the delivery records found.
func (t *batchTxn) load(fresh []*pb.ResponseOp) (map[string]*mvccpb.KeyValue, error) {
	delivered := map[string]*mvccpb.KeyValue{} // delivery key → record (fresh reads only)
	if fresh == nil {
		return delivered, nil
	}
	pkvs := fresh[0].GetResponseRange().Kvs
	if len(pkvs) == 0 {
		return nil, fmt.Errorf("no such pipeline: %w", pipeline.ErrNotFound)
	}
	var prec pipelineRecord
	if err := json.Unmarshal(pkvs[0].Value, &prec); err != nil {
		return nil, fmt.Errorf("decode pipeline: %w", err)
	}
	st := counterState{ok: true, owner: prec.Owner, repo: prec.Repo, pipelineRev: pkvs[0].CreateRevision}
	if ckvs := fresh[1].GetResponseRange().Kvs; len(ckvs) > 0 {
		last, err := strconv.Atoi(string(ckvs[0].Value))
		if err != nil {
			return nil, fmt.Errorf("bad counter: %w", err)
		}
		st.last, st.counterModRv = last, ckvs[0].ModRevision
	}
	t.q.state = st
	for i, dk := range t.dKeys {
		if kvs := fresh[2+i].GetResponseRange().Kvs; len(kvs) > 0 {
			delivered[dk] = kvs[0]
		}
	}
	return delivered, nil
}

// plan builds the attempt's comparisons, operations and answers.
func (t *batchTxn) plan(delivered map[string]*mvccpb.KeyValue) error {
	s, pk, st := t.s, t.pk, t.q.state
	t.cmps = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(t.pKey), "=", st.pipelineRev)}
	if st.counterModRv == 0 {
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(t.cKey), "=", 0))
	} else {
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(t.cKey), "=", st.counterModRv))
	}
	if len(t.dKeys) > 0 && t.lease == 0 {
		var err error
		if t.lease, err = s.deliveryLease.get(t.ctx, s.cli, s.opts.DeliveryTTL, deliveryLeaseWindow); err != nil {
			return fmt.Errorf("delivery lease: %w", err)
		}
	}
	t.results, t.dupOf = make([]createRes, len(t.live)), make([]int, len(t.live))
	t.ops, t.over, t.n = nil, nil, st.last
	maker := map[string]int{}         // delivery key → index of the call making its build
	earlier := map[string]createRes{} // delivery key → answer for a delivery seen before
	size := 0
	for i, r := range t.live {
		t.dupOf[i] = -1
		dk := ""
		if r.b.DeliveryID != "" {
			dk = s.deliveryKey(pk, r.b.DeliveryID)
			answered, err := t.planDelivery(i, dk, maker, earlier, delivered)
			if err != nil {
				return err
			}
			if answered {
				continue
			}
		}
		if t.n+1 > maxBuildNumber {
			t.results[i] = createRes{err: s.wrap(pipeline.ErrConflict, "create build of %s: build numbers exhausted", pk)}
			continue
		}
		nb := r.b
		nb.Number, nb.Owner, nb.Repo = t.n+1, st.owner, st.repo
		raw, err := json.Marshal(toBuildRecord(&nb))
		if err != nil {
			t.results[i] = createRes{err: s.wrap(err, "create build of %s", pk)}
			continue
		}
		if size > 0 && size+len(raw) > maxCreateBatchBytes {
			// Leave this call and the rest for the next batch.
			t.over = t.live[i:]
			t.live, t.results, t.dupOf = t.live[:i], t.results[:i], t.dupOf[:i]
			break
		}
		size += len(raw)
		t.n++
		t.results[i] = createRes{b: nb}
		t.ops = append(t.ops, clientv3.OpPut(s.buildKey(pk, t.n), string(raw)))
		if !nb.Status.Done() {
			t.ops = append(t.ops, clientv3.OpPut(s.activeKey(pk, t.n), ""))
		}
		if dk != "" {
			maker[dk] = i
			t.ops = append(t.ops, clientv3.OpPut(dk, strconv.Itoa(t.n), clientv3.WithLease(t.lease)))
		}
	}
	return nil
}

// planDelivery answers call i of delivery key dk without a new build if
// another call of the batch or an earlier delivery made it (answered),
// and otherwise adds the comparison that the delivery is still new.
func (t *batchTxn) planDelivery(i int, dk string, maker map[string]int, earlier map[string]createRes, delivered map[string]*mvccpb.KeyValue) (answered bool, err error) {
	if j, ok := maker[dk]; ok {
		t.dupOf[i] = j
		return true, nil
	}
	if res, ok := earlier[dk]; ok {
		t.results[i] = res
		return true, nil
	}
	kv := delivered[dk]
	if kv == nil {
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(dk), "=", 0))
		return false, nil
	}
	existing, err := t.s.deliveredBuild(t.ctx, t.pk, kv)
	if err == nil {
		t.results[i] = createRes{b: existing, err: t.s.wrap(pipeline.ErrConflict, "create build of %s: delivery already made build %d", t.pk, existing.Number)}
		earlier[dk] = t.results[i]
		return true, nil
	}
	if !errors.Is(err, pipeline.ErrNotFound) {
		return false, err
	}
	// The delivery's build was deleted: the delivery makes a new one.
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(dk), "=", kv.ModRevision))
	return false, nil
}

// commit runs the planned transaction. It returns retry=true with the
// reads to plan the next attempt from, or retry=false once every call of
// the batch is answered; an error means the batch failed (fail answers).
func (t *batchTxn) commit(attempt int, fresh []*pb.ResponseOp) (next []*pb.ResponseOp, retry bool, err error) {
	s := t.s
	ops := append(t.ops, clientv3.OpPut(t.cKey, strconv.Itoa(t.n)))
	actx, acancel := s.attemptCtx(t.ctx)
	tr, err := s.cli.Txn(actx).If(t.cmps...).Then(ops...).Else(t.reads...).Commit()
	acancel()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt+1 < s.opts.MaxAttempts {
		s.deliveryLease.forget(t.lease)
		t.lease = 0
		t.requeue()
		return fresh, true, nil
	}
	if err != nil && isUnavailable(err) && t.ctx.Err() == nil {
		return t.afterLostAnswer(attempt, ops[0], err)
	}
	if err != nil {
		return nil, false, err
	}
	if tr.Succeeded {
		s.wrote(tr.Header.Revision)
		t.q.state.last, t.q.state.counterModRv = t.n, tr.Header.Revision
		s.newest.see(t.pk, t.n)
		t.answer()
		return nil, false, nil
	}
	t.requeue()
	if attempt+1 >= s.opts.MaxAttempts {
		return nil, false, fmt.Errorf("%w: gave up after %d concurrent changes", pipeline.ErrConflict, attempt+1)
	}
	if err := backoff(t.ctx, attempt); err != nil {
		return nil, false, err
	}
	return tr.Responses, true, nil
}

// afterLostAnswer handles a transaction whose answer was lost (leader
// change, lost connection): the batch may have been stored, which its
// first build tells.
func (t *batchTxn) afterLostAnswer(attempt int, first clientv3.Op, cause error) ([]*pb.ResponseOp, bool, error) {
	s := t.s
	applied, aerr := s.wasApplied(t.ctx, first)
	switch {
	case aerr != nil:
		return nil, false, cause
	case applied:
		t.q.state.ok = false // the counter's revision is unknown
		s.newest.see(t.pk, t.n)
		t.answer()
		return nil, false, nil
	}
	t.requeue()
	r, rerr := s.readTxnRetrying(t.ctx, t.reads)
	if rerr != nil || sleepCtx(t.ctx, unavailableRetryDelay(attempt)) != nil {
		return nil, false, cause
	}
	return r.Responses, true, nil
}

// requeue puts the calls left over back into the batch.
func (t *batchTxn) requeue() {
	t.live = append(t.live, t.over...)
	t.over = nil
}

// answer hands each call of the batch its result.
func (t *batchTxn) answer() {
	for i, r := range t.live {
		if t.dupOf[i] < 0 {
			r.done <- t.results[i]
			continue
		}
		first := t.results[t.dupOf[i]]
		if first.err != nil {
			r.done <- first
		} else {
			r.done <- createRes{b: first.b, err: t.s.wrap(pipeline.ErrConflict, "create build of %s: delivery already made build %d", t.pk, first.b.Number)}
		}
	}
}

// fail answers every call of the batch with err and forgets the cached
// counter state.
func (t *batchTxn) fail(err error) []*createReq {
	t.q.state.ok = false
	t.requeue()
	for _, r := range t.live {
		r.done <- createRes{err: t.s.wrap(err, "create build of %s", t.pk)}
	}
	return nil
}

// readTxnRetrying reads ops in one transaction, retrying while etcd is
// briefly unavailable (until ctx ends).
func (s *Store) readTxnRetrying(ctx context.Context, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
	for attempt := 0; ; attempt++ {
		actx, acancel := s.attemptCtx(ctx)
		r, err := s.cli.Txn(actx).Then(ops...).Commit()
		acancel()
		if err == nil {
			var kvs []*mvccpb.KeyValue
			for _, op := range r.Responses {
				kvs = append(kvs, op.GetResponseRange().GetKvs()...)
			}
			s.saw(r.Header.Revision, kvs)
		}
		if err == nil || !isUnavailable(err) || ctx.Err() != nil {
			return r, err
		}
		if serr := sleepCtx(ctx, unavailableRetryDelay(attempt)); serr != nil {
			return nil, err
		}
	}
}

// deliveredBuild returns the build a delivery record points at.
func (s *Store) deliveredBuild(ctx context.Context, pk string, kv *mvccpb.KeyValue) (pipeline.Build, error) {
	n, err := strconv.Atoi(string(kv.Value))
	if err != nil {
		return pipeline.Build{}, fmt.Errorf("bad delivery record: %w", err)
	}
	resp, err := s.cli.Get(ctx, s.buildKey(pk, n))
	if err != nil {
		return pipeline.Build{}, err
	}
	if len(resp.Kvs) == 0 {
		return pipeline.Build{}, pipeline.ErrNotFound
	}
	return decodeBuild(resp.Kvs[0].Value)
}

// GetBuild returns one build with its stages.
func (s *Store) GetBuild(ctx context.Context, owner, repo string, number int) (pipeline.Build, error) {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkNumber(number)
	}
	if err != nil {
		return pipeline.Build{}, s.wrap(err, "get build")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.buildKey(pk, number))
	if err != nil {
		return pipeline.Build{}, s.wrap(err, "get build %s#%d", pk, number)
	}
	s.saw(resp.Header.Revision, resp.Kvs)
	var kv *mvccpb.KeyValue
	if len(resp.Kvs) > 0 {
		kv = resp.Kvs[0]
	}
	return s.buildOf(pk, number, kv)
}

// buildOf is GetBuild's answer for the stored build kv (nil: none).
func (s *Store) buildOf(pk string, number int, kv *mvccpb.KeyValue) (pipeline.Build, error) {
	if kv == nil {
		return pipeline.Build{}, s.wrap(pipeline.ErrNotFound, "get build %s#%d", pk, number)
	}
	b, err := s.builds.decode(kv)
	if err != nil {
		return pipeline.Build{}, s.wrap(err, "get build %s#%d", pk, number)
	}
	return b, nil
}

// ListBuilds returns up to limit builds (50 if limit <= 0) numbered below
// before (all if before <= 0), newest first, in one round trip. It returns
// ErrNotFound if the pipeline does not exist.
func (s *Store) ListBuilds(ctx context.Context, owner, repo string, limit, before int) ([]pipeline.Build, error) {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return nil, s.wrap(err, "list builds")
	}
	if limit <= 0 {
		limit = defaultPage
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	prefix := s.buildsPrefix(pk)
	start, lowest := s.listStart(pk, before), s.newest.get(pk)-limit-newestWindow
	if before > 0 && before <= maxBuildNumber {
		lowest = before - 1 - limit - newestWindow
	}
	end, bounded := s.buildsRangeEnd(pk, lowest)
	if bounded && start >= end {
		end, bounded = clientv3.GetPrefixRangeEnd(prefix), false
	}
	resp, err := s.readTxnRetrying(ctx, []clientv3.Op{
		clientv3.OpGet(s.pipelineKeyOf(pk), clientv3.WithCountOnly()),
		clientv3.OpGet(start, clientv3.WithRange(end), clientv3.WithLimit(int64(limit))),
	})
	if err != nil {
		return nil, s.wrap(err, "list builds of %s", pk)
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return nil, s.wrap(pipeline.ErrNotFound, "list builds of %s: no such pipeline", pk)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if bounded && len(kvs) < limit {
		// Deletions thinned the window: read the open range.
		r, err := s.cli.Get(ctx, start, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(int64(limit)))
		if err != nil {
			return nil, s.wrap(err, "list builds of %s", pk)
		}
		s.saw(r.Header.Revision, r.Kvs)
		kvs = r.Kvs
	}
	return s.decodeList(pk, kvs, before)
}

// listStart is the first key of a ListBuilds page: the newest build, or
// the build numbered before-1 when before is set.
func (s *Store) listStart(pk string, before int) string {
	prefix := s.buildsPrefix(pk)
	switch {
	case before <= 0 || before > maxBuildNumber:
		return prefix
	case before == 1:
		return clientv3.GetPrefixRangeEnd(prefix) // empty range: no number < 1
	}
	return s.buildKey(pk, before-1)
}

// decodeList decodes the builds of a list.
func (s *Store) decodeList(pk string, kvs []*mvccpb.KeyValue, before int) ([]pipeline.Build, error) {
	out := make([]pipeline.Build, 0, len(kvs))
	for _, kv := range kvs {
		b, err := s.builds.decodeListed(kv)
		if err != nil {
			return nil, s.wrap(err, "list builds of %s: %s", pk, kv.Key)
		}
		b.Revision = kv.ModRevision
		out = append(out, b)
	}
	if len(out) > 0 && before <= 0 {
		s.newest.see(pk, out[0].Number)
	}
	return out, nil
}

// UpdateBuild applies fn to the stored build with optimistic concurrency,
// retrying with the fresh value on conflict (fn may run several times).
// fn cannot change the build's identity (ID, Number, Owner, Repo,
// DeliveryID).
func (s *Store) UpdateBuild(ctx context.Context, owner, repo string, number int, fn func(*pipeline.Build) error) (pipeline.Build, error) {
	return s.updateBuild(ctx, owner, repo, number, nil, fn)
}

// updateBuild is UpdateBuild starting from first, the build's value as a
// cache holds it (nil: read it; see update).
func (s *Store) updateBuild(ctx context.Context, owner, repo string, number int, first *mvccpb.KeyValue, fn func(*pipeline.Build) error) (pipeline.Build, error) {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkNumber(number)
	}
	if err != nil {
		return pipeline.Build{}, s.wrap(err, "update build")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.buildKey(pk, number)
	var result pipeline.Build
	_, err = s.update(ctx, key, first, func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		b, err := decodeBuild(cur.Value)
		if err != nil {
			return nil, err
		}
		wasDone := b.Status.Done()
		id, num, o, r, d := b.ID, b.Number, b.Owner, b.Repo, b.DeliveryID
		if err := fn(&b); err != nil {
			return nil, err
		}
		b.ID, b.Number, b.Owner, b.Repo, b.DeliveryID = id, num, o, r, d
		raw, err := json.Marshal(toBuildRecord(&b))
		if err != nil {
			return nil, err
		}
		ops := []clientv3.Op{clientv3.OpPut(key, string(raw))}
		if done := b.Status.Done(); done != wasDone {
			if done {
				ops = append(ops, clientv3.OpDelete(s.activeKey(pk, number)))
			} else {
				ops = append(ops, clientv3.OpPut(s.activeKey(pk, number), ""))
			}
		}
		result = b
		return ops, nil
	})
	if err != nil {
		return pipeline.Build{}, s.wrap(err, "update build %s#%d", pk, number)
	}
	return result, nil
}

// DeleteBuild removes one build and its delivery record. Its number is
// not reused.
func (s *Store) DeleteBuild(ctx context.Context, owner, repo string, number int) error {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkNumber(number)
	}
	if err != nil {
		return s.wrap(err, "delete build")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.buildKey(pk, number)
	_, err = s.update(ctx, key, nil, func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		var rec buildRecord
		if err := json.Unmarshal(cur.Value, &rec); err != nil {
			return nil, fmt.Errorf("decode build: %w", err)
		}
		ops := []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(s.activeKey(pk, number))}
		if rec.DeliveryID != "" && checkSegment("delivery", rec.DeliveryID) == nil {
			ops = append(ops, clientv3.OpDelete(s.deliveryKey(pk, rec.DeliveryID)))
		}
		return ops, nil
	})
	if err != nil {
		return s.wrap(err, "delete build %s#%d", pk, number)
	}
	return nil
}

// ActiveBuilds lists the builds of every pipeline whose status is not
// final. It reads an index of active builds kept in step with every build
// write, so its cost follows the number of active builds, not of all
// builds.
func (s *Store) ActiveBuilds(ctx context.Context) ([]pipeline.Build, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.activeAllPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, s.wrap(err, "active builds")
	}
	out := []pipeline.Build{}
	for start := 0; start < len(resp.Kvs); start += maxOpsPerTxn {
		chunk := resp.Kvs[start:min(start+maxOpsPerTxn, len(resp.Kvs))]
		ops := make([]clientv3.Op, len(chunk))
		for i, kv := range chunk {
			ops[i] = clientv3.OpGet(s.opts.Prefix + "builds/" + strings.TrimPrefix(string(kv.Key), s.activeAllPrefix()))
		}
		tr, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, s.wrap(err, "active builds")
		}
		for _, r := range tr.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue // deleted since the index was read
			}
			b, err := decodeBuild(kvs[0].Value)
			if err != nil {
				// One unreadable record must not stop the recovery of
				// every other build.
				s.log.Warn("active builds: skipping an unreadable build record", "key", string(kvs[0].Key), "error", err.Error())
				continue
			}
			if !b.Status.Done() {
				out = append(out, b)
			}
		}
	}
	return out, nil
}

// WatchBuild calls fn with the build's current value, then with each new
// version, until fn returns false (nil), ctx ends (ctx's error) or the
// build is deleted (ErrNotFound). Versions written while the watch was
// interrupted may be skipped, never the latest one. Each call opens an
// etcd watch of its own; Cached.WatchBuild shares its cache's one watch.
func (s *Store) WatchBuild(ctx context.Context, owner, repo string, number int, fn func(pipeline.Build) bool) error {
	return s.watchBuild(ctx, nil, owner, repo, number, fn)
}

// watchBuild is WatchBuild fed by h, the fan-out of a cache's one prefix
// watch (see hub.go): a thousand watchers then cost no etcd watch of
// their own. Without h, or while its watch is not running, it opens one.
func (s *Store) watchBuild(ctx context.Context, h *hub, owner, repo string, number int, fn func(pipeline.Build) bool) error {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkNumber(number)
	}
	if err != nil {
		return s.wrap(err, "watch build")
	}
	key := s.buildKey(pk, number)
	var lastMod int64
	for {
		// Subscribe to the fan-out (nil: not running, watch alone), then
		// (re)read the current value and follow from just after it.
		sub, _ := h.subscribe(key)
		gctx, cancel := s.opCtx(ctx)
		resp, err := s.cli.Get(gctx, key)
		cancel()
		if err != nil {
			if sub != nil {
				sub.close()
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return s.wrap(err, "watch build %s#%d", pk, number)
		}
		s.saw(resp.Header.Revision, resp.Kvs)
		done, err := s.watchBuildRead(resp.Kvs, &lastMod, fn)
		if !done {
			if sub != nil {
				done, err = s.watchBuildSub(ctx, sub, &lastMod, fn)
				sub.close()
				if !done && ctx.Err() == nil {
					continue // fell behind or the watch broke: read again
				}
			} else {
				h.countOwnWatch()
				done, err = s.watchBuildFrom(ctx, key, resp.Header.Revision+1, &lastMod, fn)
			}
		} else if sub != nil {
			sub.close()
		}
		if done {
			if err != nil {
				return s.wrap(err, "watch build %s#%d", pk, number)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The watch was cut (compaction, lost leader): read again.
		s.log.Warn("etcdstore: build watch restarted", "build", fmt.Sprintf("%s#%d", pk, number), "err", err)
		if err := sleepCtx(ctx, watchRetryDelay); err != nil {
			return err
		}
	}
}

// watchBuildRead hands the read value to fn unless seen; done as in
// watchBuildFrom.
func (s *Store) watchBuildRead(kvs []*mvccpb.KeyValue, lastMod *int64, fn func(pipeline.Build) bool) (bool, error) {
	if len(kvs) == 0 {
		return true, pipeline.ErrNotFound
	}
	return s.watchBuildEvent(false, kvs[0], lastMod, fn)
}

// watchBuildEvent hands one version (or the deletion) to fn unless seen.
func (s *Store) watchBuildEvent(del bool, kv *mvccpb.KeyValue, lastMod *int64, fn func(pipeline.Build) bool) (bool, error) {
	if del {
		return true, pipeline.ErrNotFound
	}
	if kv.ModRevision <= *lastMod {
		return false, nil
	}
	*lastMod = kv.ModRevision
	s.wrote(kv.ModRevision)
	b, err := decodeBuild(kv.Value)
	if err != nil {
		return true, err
	}
	return !fn(b), nil
}

// watchBuildSub follows sub (the fan-out of the prefix watch) until it is
// lost (done=false: read again) or the watch is over (as watchBuildFrom).
func (s *Store) watchBuildSub(ctx context.Context, sub *subscription, lastMod *int64, fn func(pipeline.Build) bool) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-sub.lost:
			return false, nil
		case ev := <-sub.ch:
			if done, err := s.watchBuildEvent(ev.del, ev.kv, lastMod, fn); done {
				return true, err
			}
		}
	}
}

// watchBuildFrom follows key from rev. It returns done=true when the
// watch is over for good (fn said stop: nil; deleted: ErrNotFound), and
// done=false with the cause when it must be set up again.
func (s *Store) watchBuildFrom(ctx context.Context, key string, rev int64, lastMod *int64, fn func(pipeline.Build) bool) (bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, key, clientv3.WithRev(rev)) {
		if err := wr.Err(); err != nil {
			return false, err
		}
		for _, ev := range wr.Events {
			if done, err := s.watchBuildEvent(ev.Type == mvccpb.DELETE, ev.Kv, lastMod, fn); done {
				return true, err
			}
		}
	}
	return false, ctx.Err()
}
