package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// OAuth 1.0a provider records (auth/oauth1's Store), keyed by token hash:
//
//	oauth1/requests/<hash>             request token (leased until it expires)
//	oauth1/tokens/<hash>               access token's grant
//	oauth1/users/<user id>/<hash>      the same grant, listed per user
//
// A grant's two keys are written and deleted in one transaction.

func (s *Store) oauth1RequestKey(h string) string { return s.opts.Prefix + "oauth1/requests/" + h }
func (s *Store) oauth1TokenPrefix() string        { return s.opts.Prefix + "oauth1/tokens/" }
func (s *Store) oauth1UserPrefix(user string) string {
	return s.opts.Prefix + "oauth1/users/" + user + "/"
}

// checkHash accepts the hex SHA-256 the provider keys tokens by.
func checkHash(h string) error {
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return pipeline.Invalid("token_hash", "must be a hex SHA-256")
	}
	return nil
}

// CreateOAuth1Request stores a request token until r.Expires (a lease).
func (s *Store) CreateOAuth1Request(ctx context.Context, r pipeline.OAuth1Request) error {
	if err := checkHash(r.TokenHash); err != nil {
		return s.wrap(err, "create oauth1 request")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	raw, err := json.Marshal(&r)
	if err != nil {
		return s.wrap(err, "create oauth1 request")
	}
	lease, err := s.cli.Grant(ctx, leaseTTL(time.Unix(0, r.Expires)))
	if err != nil {
		return s.wrap(err, "create oauth1 request")
	}
	key := s.oauth1RequestKey(r.TokenHash)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(raw), clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return s.wrap(err, "create oauth1 request")
	}
	if !resp.Succeeded {
		return s.wrap(pipeline.ErrConflict, "create oauth1 request: exists")
	}
	return nil
}

// GetOAuth1Request returns a stored request token.
func (s *Store) GetOAuth1Request(ctx context.Context, tokenHash string) (pipeline.OAuth1Request, error) {
	r, _, err := s.getOAuth1Request(ctx, tokenHash)
	return r, err
}

func (s *Store) getOAuth1Request(ctx context.Context, tokenHash string) (pipeline.OAuth1Request, int64, error) {
	if err := checkHash(tokenHash); err != nil {
		return pipeline.OAuth1Request{}, 0, s.wrap(err, "get oauth1 request")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.oauth1RequestKey(tokenHash))
	if err != nil {
		return pipeline.OAuth1Request{}, 0, s.wrap(err, "get oauth1 request")
	}
	if len(resp.Kvs) == 0 {
		return pipeline.OAuth1Request{}, 0, s.wrap(pipeline.ErrNotFound, "get oauth1 request")
	}
	var r pipeline.OAuth1Request
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return r, 0, s.wrap(fmt.Errorf("decode oauth1 request: %w", err), "get oauth1 request")
	}
	return r, resp.Kvs[0].ModRevision, nil
}

// UpdateOAuth1Request applies fn to the stored request token: "ModRevision
// unchanged then put", keeping its lease, retried on conflict.
func (s *Store) UpdateOAuth1Request(ctx context.Context, tokenHash string, fn func(*pipeline.OAuth1Request) error) (pipeline.OAuth1Request, error) {
	for attempt := 0; ; attempt++ {
		r, rev, err := s.getOAuth1Request(ctx, tokenHash)
		if err != nil {
			return r, err
		}
		if err := fn(&r); err != nil {
			return r, err
		}
		r.TokenHash = tokenHash
		raw, err := json.Marshal(&r)
		if err != nil {
			return r, s.wrap(err, "update oauth1 request")
		}
		key := s.oauth1RequestKey(tokenHash)
		octx, cancel := s.opCtx(ctx)
		resp, err := s.cli.Txn(octx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(raw), clientv3.WithIgnoreLease())).Commit()
		cancel()
		if err != nil {
			return r, s.wrap(err, "update oauth1 request")
		}
		if resp.Succeeded {
			return r, nil
		}
		if attempt+1 >= s.opts.MaxAttempts {
			return r, s.wrap(pipeline.ErrConflict, "update oauth1 request: too much contention")
		}
	}
}

// TakeOAuth1Request deletes a request token and returns it: etcd's delete
// returns the deleted value, so only one of concurrent takers gets it.
func (s *Store) TakeOAuth1Request(ctx context.Context, tokenHash string) (pipeline.OAuth1Request, error) {
	if err := checkHash(tokenHash); err != nil {
		return pipeline.OAuth1Request{}, s.wrap(err, "take oauth1 request")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Delete(ctx, s.oauth1RequestKey(tokenHash), clientv3.WithPrevKV())
	if err != nil {
		return pipeline.OAuth1Request{}, s.wrap(err, "take oauth1 request")
	}
	if len(resp.PrevKvs) == 0 {
		return pipeline.OAuth1Request{}, s.wrap(pipeline.ErrNotFound, "take oauth1 request")
	}
	var r pipeline.OAuth1Request
	if err := json.Unmarshal(resp.PrevKvs[0].Value, &r); err != nil {
		return r, s.wrap(fmt.Errorf("decode oauth1 request: %w", err), "take oauth1 request")
	}
	return r, nil
}

// PutOAuth1Grant stores an access token's grant under both its keys.
func (s *Store) PutOAuth1Grant(ctx context.Context, g pipeline.OAuth1Grant) error {
	if err := checkHash(g.TokenHash); err != nil {
		return s.wrap(err, "put oauth1 grant")
	}
	if err := checkSegment("user_id", g.UserID); err != nil {
		return s.wrap(err, "put oauth1 grant")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	raw, err := json.Marshal(&g)
	if err != nil {
		return s.wrap(err, "put oauth1 grant")
	}
	_, err = s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.oauth1TokenPrefix()+g.TokenHash, string(raw)),
		clientv3.OpPut(s.oauth1UserPrefix(g.UserID)+g.TokenHash, string(raw)),
	).Commit()
	return s.wrap(err, "put oauth1 grant")
}

// GetOAuth1Grant returns an access token's grant (a linearizable read, so
// a revocation on any server takes effect at once).
func (s *Store) GetOAuth1Grant(ctx context.Context, tokenHash string) (pipeline.OAuth1Grant, error) {
	if err := checkHash(tokenHash); err != nil {
		return pipeline.OAuth1Grant{}, s.wrap(err, "get oauth1 grant")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.oauth1TokenPrefix()+tokenHash)
	if err != nil {
		return pipeline.OAuth1Grant{}, s.wrap(err, "get oauth1 grant")
	}
	if len(resp.Kvs) == 0 {
		return pipeline.OAuth1Grant{}, s.wrap(pipeline.ErrNotFound, "get oauth1 grant")
	}
	var g pipeline.OAuth1Grant
	if err := json.Unmarshal(resp.Kvs[0].Value, &g); err != nil {
		return g, s.wrap(fmt.Errorf("decode oauth1 grant: %w", err), "get oauth1 grant")
	}
	return g, nil
}

// ListOAuth1Grants returns a user's grants.
func (s *Store) ListOAuth1Grants(ctx context.Context, userID string) ([]pipeline.OAuth1Grant, error) {
	if err := checkSegment("user_id", userID); err != nil {
		return nil, s.wrap(err, "list oauth1 grants")
	}
	return s.listOAuth1Grants(ctx, s.oauth1UserPrefix(userID))
}

func (s *Store) listOAuth1Grants(ctx context.Context, prefix string) ([]pipeline.OAuth1Grant, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, s.wrap(err, "list oauth1 grants")
	}
	out := make([]pipeline.OAuth1Grant, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var g pipeline.OAuth1Grant
		if err := json.Unmarshal(kv.Value, &g); err != nil {
			return nil, s.wrap(fmt.Errorf("decode oauth1 grant %s: %w", kv.Key, err), "list oauth1 grants")
		}
		out = append(out, g)
	}
	return out, nil
}

// DeleteOAuth1Grants deletes userID's grants (every user's when userID is
// empty) that match, each with both its keys in one transaction.
func (s *Store) DeleteOAuth1Grants(ctx context.Context, userID string, match func(pipeline.OAuth1Grant) bool) (int, error) {
	prefix := s.oauth1TokenPrefix()
	if userID != "" {
		if err := checkSegment("user_id", userID); err != nil {
			return 0, s.wrap(err, "delete oauth1 grants")
		}
		prefix = s.oauth1UserPrefix(userID)
	}
	gs, err := s.listOAuth1Grants(ctx, prefix)
	if err != nil {
		return 0, err
	}
	var ops []clientv3.Op
	for _, g := range gs {
		if !match(g) || checkHash(g.TokenHash) != nil || checkSegment("user_id", g.UserID) != nil {
			continue
		}
		ops = append(ops, clientv3.OpDelete(s.oauth1TokenPrefix()+g.TokenHash), clientv3.OpDelete(s.oauth1UserPrefix(g.UserID)+g.TokenHash))
	}
	// etcd bounds the operations of one transaction (128 by default).
	for i := 0; i < len(ops); i += 100 {
		octx, cancel := s.opCtx(ctx)
		_, err := s.cli.Txn(octx).Then(ops[i:min(i+100, len(ops))]...).Commit()
		cancel()
		if err != nil {
			return i / 2, s.wrap(err, "delete oauth1 grants")
		}
	}
	return len(ops) / 2, nil
}
