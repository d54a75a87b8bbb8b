package export

import "context"

// Request is what a push sink sends: one backend request's worth of
// aggregated data.
type Request interface {
	// Units is what the queue's capacity counts (measurements, samples).
	Units() int
	// Instances is how many Mixer instances the request carries, for the
	// drop counters that reconcile with what Mixer sent.
	Instances() int
}

// PushFunc makes one attempt at sending r. It returns nil once the backend
// took r; a Permanent error when retrying cannot help; a Throttle error
// when the backend named a wait; any other error is retried.
type PushFunc[R Request] func(ctx context.Context, r R) error

// Codec turns a request into the payload of a spool file and back. The
// payload must hold no secret: credentials are added at send time.
type Codec[R Request] struct {
	Encode func(r R) []byte
	Decode func(payload []byte, units, instances int) (R, error)
}
