package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Retention: the oldest finished builds of each pipeline
// beyond KeepBuilds are deleted with their logs, and the logs of builds
// finished more than KeepLogs ago are deleted while the build stays (its
// log endpoints then answer "log pruned"). Builds that are not final
// (PENDING, RUNNING, WAITING) are never touched and do not count towards
// KeepBuilds.
//
// One server prunes at a time: every server campaigns in an etcd election
// (go.etcd.io/etcd/client/v3/concurrency) under retention/leader; the
// leader runs a pass every Interval, and every pruning transaction also
// checks that its leader key still exists, so a server that lost its
// lease (paused, cut off) cannot prune alongside the new leader. When the
// leader stops (or dies: its lease expires after SessionTTL), another
// server takes over.
//
// Work is bounded: each transaction deletes at most Batch builds (three
// operations each, under etcd's 128-operation default), and reads are
// keys-only or bounded ranges. Keys:
//
//	retention/leader/<lease>         the election
//	retention/logs/<owner>/<repo>    number below which every build's logs were looked at
//	logs/<owner>/<repo>/<inv>/pruned tombstone: this build's logs were pruned (Unix ns)
//
// Build numbers come from the pipeline's counter (see CreateBuild), never
// from the builds that exist, so pruning never leads to a number being
// reused.

// RetentionConfig configures a Retention. Zero values take the defaults.
type RetentionConfig struct {
	// KeepBuilds is how many finished builds each pipeline keeps (0: all).
	KeepBuilds int
	// KeepLogs is how long after a build finished its logs are kept (0:
	// forever).
	KeepLogs time.Duration
	// Interval between passes (default 10m); the first pass runs as soon
	// as this server leads.
	Interval time.Duration
	// Batch is the most builds one transaction prunes (default and at
	// most 32).
	Batch int
	// SessionTTL is the election lease's time to live (default 15s): how
	// long a dead leader blocks the others.
	SessionTTL time.Duration
	// Identity names this server in the election (default: a random id).
	Identity string
	// OnBuildPruned runs after a build was deleted, to release what lives
	// outside etcd (workspace, Kubernetes leftovers, log files).
	OnBuildPruned func(ctx context.Context, owner, repo string, build int)
	// OnLogsPruned runs after a build's logs were pruned (log files).
	OnLogsPruned func(ctx context.Context, owner, repo string, build int)
	// Logger receives what was pruned and failures (nil: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

const maxRetentionBatch = 32 // × 3 operations + guard + watermark ≤ maxOpsPerTxn

// Retention is the background pruner. Start it with Store.StartRetention.
type Retention struct {
	s   *Store
	cfg RetentionConfig
	log *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	leader       atomic.Bool
	passes       atomic.Int64
	prunedBuilds atomic.Int64
	prunedLogs   atomic.Int64
	errs         atomic.Int64
}

// errNotLeader: a pruning transaction found the leader key gone.
var errNotLeader = errors.New("etcdstore: retention: no longer the leader")

// StartRetention starts campaigning for the pruner's election and, while
// leading, pruning. Stop ends it (resigning).
func (s *Store) StartRetention(cfg RetentionConfig) *Retention {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Minute
	}
	if cfg.Batch <= 0 || cfg.Batch > maxRetentionBatch {
		cfg.Batch = maxRetentionBatch
	}
	if cfg.SessionTTL < time.Second {
		cfg.SessionTTL = 15 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Identity == "" {
		cfg.Identity = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	log := cfg.Logger
	if log == nil {
		log = s.log
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Retention{s: s, cfg: cfg, log: log, cancel: cancel, done: make(chan struct{})}
	go r.run(ctx)
	return r
}

// Stop stops pruning and resigns, so another server takes over at once.
func (r *Retention) Stop() {
	r.cancel()
	<-r.done
}

// Leader reports whether this server is the pruner now.
func (r *Retention) Leader() bool { return r.leader.Load() }

// Passes counts the passes this server ran.
func (r *Retention) Passes() int64 { return r.passes.Load() }

// PrunedBuilds counts the builds this server deleted.
func (r *Retention) PrunedBuilds() int64 { return r.prunedBuilds.Load() }

// PrunedLogs counts the builds whose logs this server deleted (the build
// kept).
func (r *Retention) PrunedLogs() int64 { return r.prunedLogs.Load() }

// Errors counts failed passes.
func (r *Retention) Errors() int64 { return r.errs.Load() }

func (r *Retention) run(ctx context.Context) {
	defer close(r.done)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			if sleepCtx(ctx, min(time.Duration(attempt)*time.Second, r.cfg.SessionTTL)) != nil {
				return
			}
		}
		// The session's own context stays alive after ctx ends, so that
		// Close can still revoke the lease.
		sess, err := concurrency.NewSession(r.s.cli, concurrency.WithTTL(int(r.cfg.SessionTTL/time.Second)))
		if err != nil {
			r.log.Warn("retention: cannot open an election session", "error", err.Error())
			continue
		}
		el := concurrency.NewElection(sess, r.s.opts.Prefix+"retention/leader")
		if err := el.Campaign(ctx, r.cfg.Identity); err != nil {
			r.closeSession(sess, nil)
			if ctx.Err() == nil {
				r.log.Warn("retention: campaign failed", "error", err.Error())
			}
			continue
		}
		attempt = 0
		r.leader.Store(true)
		r.log.Info("retention: this server prunes now", "identity", r.cfg.Identity)
		r.lead(ctx, sess, el)
		r.leader.Store(false)
		r.closeSession(sess, el)
	}
}

func (r *Retention) closeSession(sess *concurrency.Session, el *concurrency.Election) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if el != nil {
		// Best effort: closing the session below revokes the lease, which
		// deletes the leader key anyway.
		_ = el.Resign(ctx)
	}
	// Best effort: an unrevoked lease expires after SessionTTL.
	_ = sess.Close()
}

// lead runs passes while this server leads.
func (r *Retention) lead(ctx context.Context, sess *concurrency.Session, el *concurrency.Election) {
	guard := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
				cancel()
			case <-pctx.Done():
			}
		}()
		err := r.Pass(pctx, guard)
		cancel()
		r.passes.Add(1)
		if errors.Is(err, errNotLeader) {
			return
		}
		if err != nil && ctx.Err() == nil {
			r.errs.Add(1)
			r.log.Warn("retention: pass failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			return
		case <-t.C:
		}
	}
}

// Pass prunes every pipeline once. Every transaction it writes also
// checks guard (the leader key); a failed guard ends it with errNotLeader.
func (r *Retention) Pass(ctx context.Context, guard clientv3.Cmp) error {
	s := r.s
	resp, err := s.cli.Get(ctx, s.pipelinesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return s.wrap(err, "retention: list pipelines")
	}
	var errs []error
	for _, kv := range resp.Kvs {
		pk := strings.TrimPrefix(string(kv.Key), s.pipelinesPrefix())
		var rec pipelineRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			errs = append(errs, fmt.Errorf("retention: decode pipeline %s: %w", pk, err))
			continue
		}
		if r.cfg.KeepBuilds > 0 {
			if err := r.pruneBuilds(ctx, guard, pk, rec.Owner, rec.Repo); err != nil {
				if errors.Is(err, errNotLeader) || ctx.Err() != nil {
					return err
				}
				errs = append(errs, err)
			}
		}
		if r.cfg.KeepLogs > 0 {
			if err := r.pruneLogs(ctx, guard, pk, rec.Owner, rec.Repo); err != nil {
				if errors.Is(err, errNotLeader) || ctx.Err() != nil {
					return err
				}
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// pruneBuilds deletes the finished builds of pk beyond the newest
// KeepBuilds finished ones, Batch per transaction.
func (r *Retention) pruneBuilds(ctx context.Context, guard clientv3.Cmp, pk, owner, repo string) error {
	s := r.s
	for {
		act, err := s.cli.Get(ctx, s.activePrefix(pk), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return s.wrap(err, "retention: active builds of %s", pk)
		}
		active := map[string]bool{}
		for _, kv := range act.Kvs {
			active[strings.TrimPrefix(string(kv.Key), s.activePrefix(pk))] = true
		}
		// Newest first (inverted numbers): the first KeepBuilds finished
		// ones stay.
		limit := int64(r.cfg.KeepBuilds + len(active) + r.cfg.Batch)
		keys, err := s.cli.Get(ctx, s.buildsPrefix(pk), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(limit))
		if err != nil {
			return s.wrap(err, "retention: builds of %s", pk)
		}
		finished := 0
		var cands []clientv3.Op
		for _, kv := range keys.Kvs {
			if active[strings.TrimPrefix(string(kv.Key), s.buildsPrefix(pk))] {
				continue
			}
			if finished++; finished > r.cfg.KeepBuilds {
				cands = append(cands, clientv3.OpGet(string(kv.Key)))
				if len(cands) == r.cfg.Batch {
					break
				}
			}
		}
		if len(cands) == 0 {
			return nil
		}
		vals, err := s.cli.Txn(ctx).Then(cands...).Commit()
		if err != nil {
			return s.wrap(err, "retention: read builds of %s", pk)
		}
		cmps := []clientv3.Cmp{guard}
		var ops []clientv3.Op
		var numbers []int
		for _, rr := range vals.Responses {
			kvs := rr.GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue // deleted meanwhile
			}
			kv := kvs[0]
			var rec buildRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				r.log.Warn("retention: skipping an unreadable build record", "key", string(kv.Key), "error", err.Error())
				continue
			}
			if !pipeline.Status(rec.Status).Done() {
				continue // never prune a build that is not final
			}
			n := rec.Number
			cmps = append(cmps,
				clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision),
				clientv3.Compare(clientv3.CreateRevision(s.activeKey(pk, n)), "=", 0))
			ops = append(ops, clientv3.OpDelete(string(kv.Key)),
				clientv3.OpDelete(s.logsBuildPrefix(pk, n), clientv3.WithPrefix()))
			if rec.DeliveryID != "" && checkSegment("delivery", rec.DeliveryID) == nil {
				ops = append(ops, clientv3.OpDelete(s.deliveryKey(pk, rec.DeliveryID)))
			}
			numbers = append(numbers, n)
		}
		if len(numbers) == 0 {
			return nil
		}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return s.wrap(err, "retention: prune builds of %s", pk)
		}
		if !tr.Succeeded {
			if r.lostLead(ctx, guard) {
				return errNotLeader
			}
			continue // a build changed meanwhile: look again
		}
		s.wrote(tr.Header.Revision)
		r.prunedBuilds.Add(int64(len(numbers)))
		r.log.Info("retention: pruned builds", "pipeline", owner+"/"+repo, "builds", numbers)
		if r.cfg.OnBuildPruned != nil {
			for _, n := range numbers {
				r.cfg.OnBuildPruned(ctx, owner, repo, n)
			}
		}
		if len(cands) < r.cfg.Batch {
			return nil
		}
	}
}

// lostLead reports whether guard no longer holds.
func (r *Retention) lostLead(ctx context.Context, guard clientv3.Cmp) bool {
	tr, err := r.s.cli.Txn(ctx).If(guard).Commit()
	return err == nil && !tr.Succeeded
}

func (s *Store) logsWatermarkKey(pk string) string { return s.opts.Prefix + "retention/logs/" + pk }

func (s *Store) logsPrunedKey(pk string, build int) string {
	return s.logsBuildPrefix(pk, build) + "pruned"
}

// logMarks reads the log keys of a window of builds: which builds have
// stage logs, and which carry the "pruned" marker.
func (s *Store) logMarks(pk string, kvs []*mvccpb.KeyValue) (hasLogs, pruned map[int]bool) {
	hasLogs, pruned = map[int]bool{}, map[int]bool{}
	for _, kv := range kvs {
		rest := strings.TrimPrefix(string(kv.Key), s.logsPipelinePrefix(pk))
		inv, name, _ := strings.Cut(rest, "/")
		iv, err := strconv.Atoi(inv)
		if err != nil {
			continue
		}
		n := maxBuildNumber + 1 - iv
		if name == "pruned" {
			pruned[n] = true
		} else {
			hasLogs[n] = true
		}
	}
	return hasLogs, pruned
}

// reportPrunedLogs counts, logs and announces the builds whose logs a
// committed batch pruned.
func (r *Retention) reportPrunedLogs(ctx context.Context, owner, repo string, numbers []int) {
	if len(numbers) == 0 {
		return
	}
	r.prunedLogs.Add(int64(len(numbers)))
	r.log.Info("retention: pruned logs", "pipeline", owner+"/"+repo, "builds", numbers)
	if r.cfg.OnLogsPruned != nil {
		for _, n := range numbers {
			r.cfg.OnLogsPruned(ctx, owner, repo, n)
		}
	}
}

// pruneLogs deletes the logs of pk's builds finished before now-KeepLogs,
// oldest first, leaving a tombstone per build. A watermark remembers up
// to which number every build was settled, so a pass reads only the
// builds above it that are old enough; a build that is not final (or
// finished recently) holds the watermark, not the pruning of the builds
// after it.
func (r *Retention) pruneLogs(ctx context.Context, guard clientv3.Cmp, pk, owner, repo string) error {
	s := r.s
	cutoff := r.cfg.Now().Add(-r.cfg.KeepLogs).UnixNano()
	wmKey := s.logsWatermarkKey(pk)
	head, err := s.cli.Txn(ctx).Then(clientv3.OpGet(wmKey), clientv3.OpGet(s.counterKey(pk))).Commit()
	if err != nil {
		return s.wrap(err, "retention: log watermark of %s", pk)
	}
	wm, last := 0, 0
	if kvs := head.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		wm, _ = strconv.Atoi(string(kvs[0].Value)) // a bad value restarts from 0: harmless
	}
	if kvs := head.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		if last, err = strconv.Atoi(string(kvs[0].Value)); err != nil {
			return fmt.Errorf("retention: bad counter of %s: %w", pk, err)
		}
	}
	startWM := wm
	held := false // a build at or above the cursor is not settled yet
	for cursor := wm; cursor < last; {
		hi := min(cursor+r.cfg.Batch, last)
		// Numbers cursor+1 .. hi: keys from buildKey(hi) (inclusive) to
		// buildKey(cursor) (exclusive; inverted numbers).
		win, err := s.cli.Txn(ctx).Then(
			clientv3.OpGet(s.buildKey(pk, hi), clientv3.WithRange(s.buildKey(pk, cursor))),
			clientv3.OpGet(s.logsBuildPrefix(pk, hi), clientv3.WithRange(s.logsBuildPrefix(pk, cursor)), clientv3.WithKeysOnly()),
		).Commit()
		if err != nil {
			return s.wrap(err, "retention: read builds of %s", pk)
		}
		hasLogs, pruned := s.logMarks(pk, win.Responses[1].GetResponseRange().Kvs)
		builds := win.Responses[0].GetResponseRange().Kvs
		cmps := []clientv3.Cmp{guard}
		var ops []clientv3.Op
		var numbers []int
		reached := false // a build created after the cutoff: nothing newer qualifies
		settled := hi
		// Ascending numbers: the keys are in descending number order.
		for i := len(builds) - 1; i >= 0; i-- {
			kv := builds[i]
			var rec buildRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				continue // unreadable: left alone (settled)
			}
			n := rec.Number
			if rec.Created >= cutoff {
				reached, settled = true, n-1
				break
			}
			if !pipeline.Status(rec.Status).Done() || rec.Finished >= cutoff {
				if !held {
					held, wm = true, n-1
				}
				continue
			}
			if hasLogs[n] && !pruned[n] {
				prefix := s.logsBuildPrefix(pk, n)
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
				// Stage logs ("00000/"...) sort before "pruned".
				ops = append(ops, clientv3.OpDelete(prefix, clientv3.WithRange(s.logsPrunedKey(pk, n))),
					clientv3.OpPut(s.logsPrunedKey(pk, n), strconv.FormatInt(r.cfg.Now().UnixNano(), 10)))
				numbers = append(numbers, n)
			}
		}
		if !held {
			wm = settled
		}
		if wm != startWM {
			ops = append(ops, clientv3.OpPut(wmKey, strconv.Itoa(wm)))
		}
		if len(ops) > 0 {
			tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
			if err != nil {
				return s.wrap(err, "retention: prune logs of %s", pk)
			}
			if !tr.Succeeded {
				if r.lostLead(ctx, guard) {
					return errNotLeader
				}
				return nil // a build changed meanwhile: the next pass looks again
			}
			s.wrote(tr.Header.Revision)
			startWM = wm
			r.reportPrunedLogs(ctx, owner, repo, numbers)
		}
		if reached {
			return nil
		}
		cursor = hi
	}
	return nil
}

// PruneAware wraps a log store so that the log of a build whose logs
// retention pruned answers an error wrapping pipeline.ErrLogPruned (with a
// message saying so) instead of a plain "not found". keepLogs is named in
// the message.
func (s *Store) PruneAware(logs pipeline.LogStore, keepLogs time.Duration) pipeline.LogStore {
	return &pruneAwareLogs{LogStore: logs, s: s, keep: keepLogs}
}

type pruneAwareLogs struct {
	pipeline.LogStore
	s    *Store
	keep time.Duration
}

// prunedErr returns the "log pruned" error when ref's build has a
// tombstone, else err.
func (l *pruneAwareLogs) prunedErr(ctx context.Context, ref pipeline.LogRef, err error) error {
	if !errors.Is(err, pipeline.ErrNotFound) {
		return err
	}
	owner, repo, _ := strings.Cut(ref.Pipeline, "/")
	pk, perr := pipelineKey(owner, repo)
	if perr != nil || checkNumber(ref.Build) != nil {
		return err
	}
	gctx, cancel := l.s.opCtx(ctx)
	defer cancel()
	resp, gerr := l.s.cli.Get(gctx, l.s.logsPrunedKey(pk, ref.Build), clientv3.WithCountOnly())
	if gerr != nil || resp.Count == 0 {
		return err
	}
	return &pipeline.PublicError{Kind: pipeline.ErrLogPruned, Msg: fmt.Sprintf(
		"log pruned: build %d's logs were deleted %s after it finished (retention, --keep-logs); the build record stays", ref.Build, l.keep)}
}

func (l *pruneAwareLogs) Read(ctx context.Context, ref pipeline.LogRef) ([]byte, error) {
	data, err := l.LogStore.Read(ctx, ref)
	if err != nil {
		return nil, l.prunedErr(ctx, ref, err)
	}
	return data, nil
}

func (l *pruneAwareLogs) Follow(ctx context.Context, ref pipeline.LogRef, fn func(line []byte) error) error {
	return l.prunedErr(ctx, ref, l.LogStore.Follow(ctx, ref, fn))
}
