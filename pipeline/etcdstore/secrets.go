package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// PutSecret creates or replaces one secret set (values sealed) and adds
// its name to the pipeline's Secrets in the same transaction.
func (s *Store) PutSecret(ctx context.Context, owner, repo string, set pipeline.SecretSet) error {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkSegment("name", set.Name)
	}
	if err != nil {
		return s.wrap(err, "put secret")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	sKey := s.secretKey(pk, set.Name)
	rec, err := s.toSecretRecord(set, sKey)
	if err != nil {
		return s.wrap(err, "put secret %s/%s", pk, set.Name)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return s.wrap(err, "put secret %s/%s", pk, set.Name)
	}
	pKey := s.pipelineKeyOf(pk)
	_, err = s.update(ctx, pKey, nil, func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		ops := []clientv3.Op{clientv3.OpPut(sKey, string(raw))}
		var p pipelineRecord
		if err := json.Unmarshal(cur.Value, &p); err != nil {
			return nil, fmt.Errorf("decode pipeline: %w", err)
		}
		i, found := slices.BinarySearch(p.Secrets, set.Name)
		if found {
			return ops, nil
		}
		p.Secrets = slices.Insert(p.Secrets, i, set.Name)
		praw, err := json.Marshal(&p)
		if err != nil {
			return nil, err
		}
		return append(ops, clientv3.OpPut(pKey, string(praw))), nil
	})
	if err != nil {
		return s.wrap(err, "put secret %s/%s", pk, set.Name)
	}
	return nil
}

// GetSecret returns one secret set with its data opened.
func (s *Store) GetSecret(ctx context.Context, owner, repo, name string) (pipeline.SecretSet, error) {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkSegment("name", name)
	}
	if err != nil {
		return pipeline.SecretSet{}, s.wrap(err, "get secret")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.secretKey(pk, name)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return pipeline.SecretSet{}, s.wrap(err, "get secret %s/%s", pk, name)
	}
	if len(resp.Kvs) == 0 {
		return pipeline.SecretSet{}, s.wrap(pipeline.ErrNotFound, "get secret %s/%s", pk, name)
	}
	set, err := s.decodeSecret(resp.Kvs[0])
	if err != nil {
		return pipeline.SecretSet{}, s.wrap(err, "get secret %s/%s", pk, name)
	}
	return set, nil
}

// ListSecrets returns every secret set of a pipeline with data, by name;
// ErrNotFound if the pipeline does not exist.
func (s *Store) ListSecrets(ctx context.Context, owner, repo string) ([]pipeline.SecretSet, error) {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return nil, s.wrap(err, "list secrets")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.pipelineKeyOf(pk), clientv3.WithCountOnly()),
		clientv3.OpGet(s.secretsPrefix(pk), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, s.wrap(err, "list secrets of %s", pk)
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return nil, s.wrap(pipeline.ErrNotFound, "list secrets of %s: no such pipeline", pk)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	out := make([]pipeline.SecretSet, 0, len(kvs))
	for _, kv := range kvs {
		set, err := s.decodeSecret(kv)
		if err != nil {
			return nil, s.wrap(err, "list secrets of %s", pk)
		}
		out = append(out, set)
	}
	return out, nil
}

// DeleteSecret removes one secret set and its name from the pipeline in
// one transaction; ErrNotFound if there is none of that name.
func (s *Store) DeleteSecret(ctx context.Context, owner, repo, name string) error {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkSegment("name", name)
	}
	if err != nil {
		return s.wrap(err, "delete secret")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	pKey := s.pipelineKeyOf(pk)
	_, err = s.update(ctx, pKey, nil, func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		var p pipelineRecord
		if err := json.Unmarshal(cur.Value, &p); err != nil {
			return nil, fmt.Errorf("decode pipeline: %w", err)
		}
		i, found := slices.BinarySearch(p.Secrets, name)
		if !found {
			return nil, pipeline.ErrNotFound
		}
		p.Secrets = slices.Delete(p.Secrets, i, i+1)
		praw, err := json.Marshal(&p)
		if err != nil {
			return nil, err
		}
		return []clientv3.Op{clientv3.OpPut(pKey, string(praw)), clientv3.OpDelete(s.secretKey(pk, name))}, nil
	})
	if err != nil {
		return s.wrap(err, "delete secret %s/%s", pk, name)
	}
	return nil
}

func (s *Store) decodeSecret(kv *mvccpb.KeyValue) (pipeline.SecretSet, error) {
	var rec secretRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return pipeline.SecretSet{}, fmt.Errorf("decode secret: %w", err)
	}
	return s.fromSecretRecord(&rec, string(kv.Key))
}
