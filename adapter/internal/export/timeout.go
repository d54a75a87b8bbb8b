package export

import (
	"context"
	"time"
)

// timeout bounds each attempt, so that a backend that hangs costs one
// attempt, not the request's whole retry time.
type timeout[R Request] struct {
	next sender[R]
	d    time.Duration
}

func (t timeout[R]) send(ctx context.Context, r R) error {
	if t.d <= 0 {
		return t.next.send(ctx, r)
	}
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.next.send(ctx, r)
}

// push is the innermost layer: the sink's own push function.
type push[R Request] PushFunc[R]

func (p push[R]) send(ctx context.Context, r R) error { return p(ctx, r) }
