package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/kontinuous/kontinuous/pipeline"
)

// etcd space: etcd refuses every write once its database
// reaches its quota (QuotaBackendBytes, 2 GiB by default) and raises a
// NOSPACE alarm that stays until an operator compacts, defragments and
// disarms it. The store reports the sizes and the alarm (Space), fails
// Ready while the alarm is raised, and turns the refused writes into an
// ErrUnavailable whose message names the cause.

// NoSpaceMessage is what callers are told when etcd refuses writes for
// lack of space.
const NoSpaceMessage = "etcd is out of space (NOSPACE alarm: its database reached its quota); writes are refused until an operator compacts, defragments and disarms it (see docs/kubernetes, \"etcd space\")"

// DefaultQuotaBytes is etcd's own default quota (QuotaBackendBytes).
const DefaultQuotaBytes = 2 << 30

// isNoSpace reports whether err is etcd refusing a write for lack of
// space.
func isNoSpace(err error) bool {
	return errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace) ||
		(err != nil && strings.Contains(err.Error(), rpctypes.ErrNoSpace.Error()))
}

// noSpace wraps err as the "out of space" ErrUnavailable.
func noSpace(err error) error {
	return &pipeline.PublicError{Kind: pipeline.ErrUnavailable, Msg: NoSpaceMessage, Cause: err}
}

// Space is etcd's database size against its quota.
type Space struct {
	// DBSize is the largest database file among the endpoints (bytes):
	// what the quota is checked against.
	DBSize int64
	// DBSizeInUse is the part of it holding live data (the rest is freed
	// pages that a defragmentation gives back).
	DBSizeInUse int64
	// Quota is the quota the members report (0: unknown, etcd < 3.6).
	Quota int64
	// NoSpace: a NOSPACE alarm is raised.
	NoSpace bool
	// Alarms lists the raised alarms ("NOSPACE", "CORRUPT").
	Alarms []string
}

// Space asks every endpoint for its status and the cluster for its
// alarms. An endpoint that does not answer is skipped; the error says
// which, when none answered.
func (s *Store) Space(ctx context.Context) (Space, error) {
	ctx, cancel := context.WithTimeout(ctx, min(s.opts.OpTimeout, 3*time.Second))
	defer cancel()
	var sp Space
	var errs []error
	answered := 0
	for _, ep := range s.cli.Endpoints() {
		st, err := s.cli.Status(ctx, ep)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			continue
		}
		answered++
		sp.DBSize = max(sp.DBSize, st.DbSize)
		sp.DBSizeInUse = max(sp.DBSizeInUse, st.DbSizeInUse)
		sp.Quota = max(sp.Quota, st.DbSizeQuota)
	}
	if answered == 0 {
		return sp, s.wrap(errors.Join(errs...), "etcd status")
	}
	alarms, err := s.alarms(ctx)
	if err != nil {
		return sp, err
	}
	for _, a := range alarms {
		sp.Alarms = append(sp.Alarms, a.String())
		if a == pb.AlarmType_NOSPACE {
			sp.NoSpace = true
		}
	}
	return sp, nil
}

// alarms returns the raised alarm types, once each.
func (s *Store) alarms(ctx context.Context) ([]pb.AlarmType, error) {
	resp, err := s.cli.AlarmList(ctx)
	if err != nil {
		return nil, s.wrap(err, "etcd alarms")
	}
	var out []pb.AlarmType
	seen := map[pb.AlarmType]bool{}
	for _, a := range resp.Alarms {
		if a.Alarm != pb.AlarmType_NONE && !seen[a.Alarm] {
			seen[a.Alarm] = true
			out = append(out, a.Alarm)
		}
	}
	return out, nil
}

// readyAlarms fails when an alarm keeps etcd from taking writes.
func (s *Store) readyAlarms(ctx context.Context) error {
	alarms, err := s.alarms(ctx)
	if err != nil {
		return err
	}
	for _, a := range alarms {
		switch a {
		case pb.AlarmType_NOSPACE:
			return noSpace(errors.New("etcd alarm NOSPACE"))
		case pb.AlarmType_CORRUPT:
			return &pipeline.PublicError{Kind: pipeline.ErrUnavailable, Msg: "etcd raised a CORRUPT alarm: a member's data is inconsistent; see etcd's disaster recovery"}
		}
	}
	return nil
}
