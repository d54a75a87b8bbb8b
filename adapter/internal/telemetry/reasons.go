package telemetry

// Rejection reasons: an instance refused with an error to Mixer.
const (
	ReasonUnknownInstance = "unknown_instance"
	ReasonMissingValue    = "missing_value"
	ReasonNotNumeric      = "not_numeric"
	ReasonNonFinite       = "non_finite"
	ReasonNegativeCounter = "negative_counter"
	ReasonSuperseded      = "superseded_definition"
	ReasonBadConfig       = "bad_config"
	ReasonMalformed       = "malformed_request"
	ReasonTooLarge        = "request_too_large"
	ReasonDuplicate       = "duplicate_request"
)

// RejectionReasons are the reasons of meshmetrics_instances_rejected_total.
func RejectionReasons() []string {
	return []string{ReasonUnknownInstance, ReasonMissingValue, ReasonNotNumeric, ReasonNonFinite, ReasonNegativeCounter,
		ReasonSuperseded, ReasonBadConfig, ReasonMalformed, ReasonTooLarge, ReasonDuplicate}
}

// Config error reasons (meshmetrics_config_errors_total).
const (
	ConfigErrorDecode     = "decode"
	ConfigErrorValidation = "validation"
	ConfigErrorSink       = "sink"
	// ConfigErrorTooLarge: estimated above --handler-cache-max-bytes alone.
	ConfigErrorTooLarge = "too_large"
)

// ConfigErrorReasons are the reasons of meshmetrics_config_errors_total.
func ConfigErrorReasons() []string {
	return []string{ConfigErrorDecode, ConfigErrorValidation, ConfigErrorSink, ConfigErrorTooLarge}
}

// Reasons of meshmetrics_grpc_refused_total: a call or stream refused
// before its messages were read (adapter/internal/ingest/grpcserver's
// admission).
const (
	GRPCUnknownMethod  = "unknown_method"
	GRPCTooManyCalls   = "too_many_calls"
	GRPCTooManyStreams = "too_many_streams"
	GRPCBytesInFlight  = "bytes_in_flight"
)

// GRPCRefusedReasons are the reasons of meshmetrics_grpc_refused_total.
func GRPCRefusedReasons() []string {
	return []string{GRPCUnknownMethod, GRPCTooManyCalls, GRPCTooManyStreams, GRPCBytesInFlight}
}

// Reasons of meshmetrics_auth_refused_total: a caller refused by the token
// check, or a TLS handshake refused (adapter/internal/ingest/grpcserver).
const (
	AuthMissingToken        = "missing_token"
	AuthWrongToken          = "wrong_token"
	AuthNoClientCertificate = "no_client_certificate"
	AuthUnknownAuthority    = "unknown_authority"
	AuthBadCertificate      = "bad_certificate"
	AuthSPIFFEID            = "spiffe_id"
	AuthNotTLS              = "not_tls"
	AuthHandshakeFailed     = "handshake_failed"
	AuthConnectionClosed    = "connection_closed"
)

// AuthRefusedReasons are the reasons of meshmetrics_auth_refused_total.
func AuthRefusedReasons() []string {
	return []string{AuthMissingToken, AuthWrongToken, AuthNoClientCertificate, AuthUnknownAuthority, AuthBadCertificate,
		AuthSPIFFEID, AuthNotTLS, AuthHandshakeFailed, AuthConnectionClosed}
}

// Drop reasons: an instance accepted and then not delivered. DropReasons
// describes each; it is the one list, which docs/RELIABILITY.md tables
// (TestReliabilityDocTablesEveryDropReason) and push sinks pre-create.
const (
	DropQueueFull       = "queue_full"
	DropSeriesLimit     = "series_limit"
	DropSinkSeriesLimit = "sink_series_limit"
	DropSuperseded      = "superseded_definition"
	DropValueOutOfRange = "value_out_of_range"
	DropSendQueueFull   = "send_queue_full"
	DropRetriesExceeded = "retries_exhausted"
	DropBackendRejected = "backend_rejected"
	// DropPartialRejected: an OTLP receiver took a request but rejected
	// some of its data points (partial success).
	DropPartialRejected = "partial_rejected"
	DropShutdown        = "shutdown_timeout"
	// With --spool-dir (adapter/internal/export's spool).
	DropSpoolFull      = "spool_full"
	DropSpoolCorrupt   = "spool_corrupt"
	DropReplayRejected = "replay_rejected"
)

// DropReason documents one reason of meshmetrics_instances_dropped_total.
type DropReason struct {
	Name string
	// Where is the layer that counts it.
	Where string
	// Meaning is what happened, for operators.
	Meaning string
}

// DropReasons is every drop reason, in the order of docs/RELIABILITY.md.
func DropReasons() []DropReason {
	return []DropReason{
		{DropQueueFull, "server, per sink", "the sink queue was full; Mixer got `ResourceExhausted`"},
		{DropSeriesLimit, "sink's series registry", "`limits.max_series_per_metric` reached"},
		{DropSinkSeriesLimit, "sink's series registry", "`--max-series` reached"},
		{DropSuperseded, "sink's series registry", "the metric was redefined by a newer config after the sample was accepted"},
		{DropValueOutOfRange, "Librato encoder", "a value beyond ±1e126, which the API refuses"},
		{DropSendQueueFull, "export: queue", "the send queue overflowed; oldest dropped"},
		{DropRetriesExceeded, "export: retry", "retried for `max_retry_elapsed` without success"},
		{DropBackendRejected, "export: retry", "a final refusal (4xx but 429; Librato's rate-limit 403 is retried)"},
		{DropPartialRejected, "OTLP sink", "an OTLP receiver took a request but reported `rejected_data_points` (partial success); instances in proportion to the points rejected"},
		{DropShutdown, "export: queue, sinks", "not sent within `--shutdown-timeout`, or arrived at a closed sink"},
		{DropSpoolFull, "export: spool", "evicted, oldest first, to stay within `--spool-max-bytes`"},
		{DropSpoolCorrupt, "export: spool", "a spool file failed its length or checksum test (instances as far as its header tells)"},
		{DropReplayRejected, "export: spool", "a request from an earlier run refused for good (remote write: out of order or out of bounds)"},
	}
}

// PushDropReasons are the reasons the export helper counts for every push
// sink, and, when spooled, those of the spool too: its counters exist at 0
// from the sink's start, so that an alert can be written in advance.
func PushDropReasons(spooled bool) []string {
	out := []string{DropSendQueueFull, DropRetriesExceeded, DropBackendRejected, DropShutdown}
	if spooled {
		out = append(out, DropSpoolFull, DropSpoolCorrupt, DropReplayRejected)
	}
	return out
}

// SinkDropReasons are the reasons of every sink's series registry and of
// the server's sink queue.
func SinkDropReasons() []string {
	return []string{DropQueueFull, DropSeriesLimit, DropSinkSeriesLimit, DropSuperseded}
}

// Results of meshmetrics_sink_requests_total.
const (
	// SendOK: delivered.
	SendOK = "ok"
	// SendPartial: delivered, but the backend reports failed items in its
	// 2xx answer (Librato's summary).
	SendPartial = "partial"
	// SendRetry: one more attempt of a request (5xx, 429, a transport error).
	SendRetry = "retry"
	// SendRejected: a final refusal, not retried.
	SendRejected = "rejected"
	// SendFailed: gave up: retry time exhausted or shutting down.
	SendFailed = "failed"
)
