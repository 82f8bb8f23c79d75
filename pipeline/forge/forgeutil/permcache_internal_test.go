package forgeutil

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestPermissionCacheKeepsNoToken(t *testing.T) {
	c := NewPermCache(time.Minute, 10, time.Now)
	tok := pipeline.ForgeToken{AccessToken: "gho_supersecrettoken"}
	c.Put(tok, "Alice", "App", pipeline.PermPush)
	if p, ok := c.Get(tok, "alice", "app"); !ok || p != pipeline.PermPush {
		t.Fatalf("get = %v, %v", p, ok)
	}
	for k := range c.m {
		if strings.Contains(fmt.Sprintf("%+v %s", k, k.token[:]), tok.AccessToken) {
			t.Fatalf("cache key holds the token: %+v", k)
		}
	}
}

func TestPermissionCacheEvictsOldestWhenFull(t *testing.T) {
	now := time.Unix(0, 0)
	c := NewPermCache(time.Hour, 10, func() time.Time { return now })
	tok := pipeline.ForgeToken{AccessToken: "t"}
	for i := range 25 {
		now = now.Add(time.Second)
		c.Put(tok, "o", fmt.Sprint("r", i), pipeline.PermRead)
		if len(c.m) > 10 {
			t.Fatalf("cache grew to %d entries", len(c.m))
		}
	}
	if _, ok := c.Get(tok, "o", "r24"); !ok {
		t.Fatal("newest entry evicted")
	}
	if _, ok := c.Get(tok, "o", "r0"); ok {
		t.Fatal("oldest entry kept")
	}
}
