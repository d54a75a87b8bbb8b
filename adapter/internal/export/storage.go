package export

import "context"

// dropFunc counts and logs a request lost for reason.
type dropFunc func(reason string, units, instances int, err error)

// storage holds a queue's requests from Put until their outcome is known.
// Two implementations: memory (the default) and the on-disk spool.
type storage[R Request] interface {
	// put stores r. It never waits for the backend; the spool waits for
	// r's fsync. What it drops to make room it counts itself.
	put(r R)
	// take waits for the next request to send; false once ctx ends.
	take(ctx context.Context) (lease[R], bool)
	// units is the number of units waiting, not counting those in flight.
	units() int
	// drain waits until what was put before the call is settled, or ctx
	// ends.
	drain(ctx context.Context) error
	// close runs once the workers have stopped: what is left is dropped
	// (memory) or kept for the next run (spool). drainErr is Drain's
	// outcome, which close may enrich.
	close(drainErr error) error
}

// requeueResult is what a storage does with a request whose retries ran
// out.
type requeueResult uint8

const (
	// notKept: memory storage; the queue counts the request as lost.
	notKept requeueResult = iota
	// kept: back first in line, to be retried after a pause.
	kept
	// evicted: the full spool had dropped it meanwhile; counted.
	evicted
)

// lease is one request taken by a worker. Exactly one of done, drop and a
// requeue other than kept ends it.
type lease[R Request] interface {
	// open returns the request and the context to send it under (the
	// spool cancels it when it evicts the request), or false when it
	// cannot be read (counted already).
	open(parent context.Context) (R, context.Context, bool)
	// replayed reports a request left by an earlier run.
	replayed() bool
	// done settles a delivered request.
	done()
	// drop counts the request as lost for reason and settles it.
	drop(reason string, err error)
	// requeue is told the request's retries ran out.
	requeue(err error) requeueResult
}
