package handler

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Rejection is why an instance was refused.
type Rejection uint8

// The reasons an instance is refused. Each maps to a telemetry reason.
const (
	RejectUnknownInstance Rejection = iota
	RejectMissingValue
	RejectNotNumeric
	RejectNonFinite
	RejectNegativeCounter
	RejectSuperseded
	numRejections
)

var rejectionReasons = [numRejections]string{
	telemetry.ReasonUnknownInstance,
	telemetry.ReasonMissingValue,
	telemetry.ReasonNotNumeric,
	telemetry.ReasonNonFinite,
	telemetry.ReasonNegativeCounter,
	telemetry.ReasonSuperseded,
}

var rejectionText = [numRejections]string{
	"unknown instance (no metric in the handler's params has this instance_name)",
	"instance has no value",
	"value is not a number",
	"value is NaN or infinite",
	"negative increment of a COUNTER",
	"metric was redefined by a newer handler config; two handler configs define it differently",
}

// Reason is the telemetry label of r.
func (r Rejection) Reason() string { return rejectionReasons[r] }

// Outcome is what Handle did with a request.
type Outcome struct {
	Received int
	// Accepted instances were handed to at least one sink.
	Accepted int
	// ReusedID: the dedup_id was seen within the window (a real Mixer reuses
	// ids under load; the call is counted all the same unless Duplicate).
	ReusedID bool
	// Duplicate: deduplication is on and a call with the same dedup_id and
	// content was seen within the window; nothing was recorded.
	Duplicate bool
	// Malformed: the request could not be read; nothing was recorded.
	Malformed error

	Rejected [numRejections]int
	examples [numRejections]string
	// Dropped counts, per sink, the instances whose sink queue was full.
	Dropped map[string]int
	// Truncated counts label values cut to limits.max_label_value_length.
	Truncated int
}

func (o *Outcome) reject(r Rejection, name []byte, detail string) {
	if o.Rejected[r] == 0 {
		ex := fmt.Sprintf("%q", truncate(string(name), 200))
		if detail != "" {
			ex += " (" + truncate(detail, 200) + ")"
		}
		o.examples[r] = ex
	}
	o.Rejected[r]++
}

func (o *Outcome) addDrop(sink string, n int) {
	if o.Dropped == nil {
		o.Dropped = map[string]int{}
	}
	o.Dropped[sink] += n
}

// RejectedTotal is the number of instances refused.
func (o *Outcome) RejectedTotal() int {
	n := 0
	for _, c := range o.Rejected {
		n += c
	}
	return n
}

// Err is the gRPC status Mixer gets: OK, InvalidArgument naming every reason
// with an example instance, or ResourceExhausted when a sink's queue was full.
// Valid instances of the same request were recorded either way.
func (o *Outcome) Err() error {
	if o.Malformed != nil {
		return status.Errorf(codes.InvalidArgument, "malformed HandleMetricRequest: %v", o.Malformed)
	}
	var parts []string
	for r, n := range o.Rejected {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d: %s, e.g. %s", n, rejectionText[r], o.examples[r]))
		}
	}
	msg := ""
	if len(parts) > 0 {
		msg = fmt.Sprintf("%d of %d instances refused: %s", o.Received-o.Accepted, o.Received, strings.Join(parts, "; "))
	}
	if len(o.Dropped) == 0 {
		if msg == "" {
			return nil
		}
		return status.Error(codes.InvalidArgument, msg)
	}
	sinks := make([]string, 0, len(o.Dropped))
	for s := range o.Dropped {
		sinks = append(sinks, s)
	}
	sort.Strings(sinks)
	var drops []string
	for _, s := range sinks {
		drops = append(drops, fmt.Sprintf("sink %s is overloaded (queue full), %d instances dropped", s, o.Dropped[s]))
	}
	if msg != "" {
		msg += "; "
	}
	return status.Error(codes.ResourceExhausted, msg+strings.Join(drops, "; "))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
