package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kontinuous/kontinuous/pipeline"
)

// PutUser creates or replaces a user, sealing its forge tokens. It sets
// Updated if zero.
func (s *Store) PutUser(ctx context.Context, u pipeline.User) error {
	if err := checkSegment("user_id", u.ID); err != nil {
		return s.wrap(err, "put user")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if u.Updated == 0 {
		u.Updated = pipeline.Now()
	}
	key := s.userKey(u.ID)
	rec := userRecord{ID: u.ID, Login: u.Login, Expiry: u.Token.Expiry, Expired: u.Token.Expired, Updated: u.Updated}
	var err error
	if rec.AccessToken, err = s.seal(u.Token.AccessToken, key, "access_token"); err != nil {
		return s.wrap(err, "put user %s", u.ID)
	}
	if rec.RefreshToken, err = s.seal(u.Token.RefreshToken, key, "refresh_token"); err != nil {
		return s.wrap(err, "put user %s", u.ID)
	}
	raw, err := json.Marshal(&rec)
	if err != nil {
		return s.wrap(err, "put user %s", u.ID)
	}
	if _, err := s.cli.Put(ctx, key, string(raw)); err != nil {
		return s.wrap(err, "put user %s", u.ID)
	}
	return nil
}

// GetUser returns a user by id ("github|1001") with its tokens opened.
func (s *Store) GetUser(ctx context.Context, id string) (pipeline.User, error) {
	if err := checkSegment("user_id", id); err != nil {
		return pipeline.User{}, s.wrap(err, "get user")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.userKey(id)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return pipeline.User{}, s.wrap(err, "get user %s", id)
	}
	if len(resp.Kvs) == 0 {
		return pipeline.User{}, s.wrap(pipeline.ErrNotFound, "get user %s", id)
	}
	var rec userRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return pipeline.User{}, s.wrap(fmt.Errorf("decode user: %w", err), "get user %s", id)
	}
	u := pipeline.User{ID: rec.ID, Login: rec.Login, Updated: rec.Updated}
	u.Token.Expiry = rec.Expiry
	u.Token.Expired = rec.Expired
	if u.Token.AccessToken, err = s.open(rec.AccessToken, key, "access_token"); err != nil {
		return pipeline.User{}, s.wrap(err, "get user %s", id)
	}
	if u.Token.RefreshToken, err = s.open(rec.RefreshToken, key, "refresh_token"); err != nil {
		return pipeline.User{}, s.wrap(err, "get user %s", id)
	}
	return u, nil
}
