package api

import (
	"context"
	"testing"
	"time"
)

// Every body fits its class, the class is at most twice the body above
// 64 KiB, and no class exceeds the webhook cap.
func TestBodyClassFitsAndBoundsTheBuffer(t *testing.T) {
	for _, n := range []int64{0, 1, 64 << 10, 64<<10 + 1, 1 << 20, 3<<20 + 5, 16 << 20, 16<<20 + 1, MaxWebhookBody} {
		i, c := bodyClass(n)
		if c < n || c > MaxWebhookBody || (n > 64<<10 && c > 2*n) {
			t.Errorf("bodyClass(%d) = %d, %d", n, i, c)
		}
		if b := getBodyBuffer(i, c); int64(len(*b)) != c {
			t.Errorf("buffer of class %d: %d bytes, want %d", i, len(*b), c)
		}
	}
}

// A body holds its share of the budget until it is released: a second
// delivery of the largest size waits for it.
func TestByteBudgetIsHeldUntilReleased(t *testing.T) {
	b := newByteBudget(WebhookBodyBudget)
	_, c := bodyClass(MaxWebhookBody)
	if !b.acquire(context.Background(), c) {
		t.Fatal("first acquire failed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if b.acquire(ctx, c) {
		t.Fatal("a second 25 MiB body got room while the first was held")
	}
	b.release(c)
	if !b.acquire(context.Background(), c) {
		t.Fatal("no room after the release")
	}
}
