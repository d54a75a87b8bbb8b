// Package export is the sending side every push sink shares, after the
// OpenTelemetry Collector's exporterhelper: a sink gives New a plain push
// function (one attempt of one request) and a codec, and gets a Sender
// made of small layers, each with one job, outermost first:
//
//   - queue (queue.go): a bounded queue that Put never blocks on, and the
//     workers that take from it. Its storage is one interface (storage.go)
//     with two implementations: memory (memory.go), which drops the oldest
//     request on overflow, and the on-disk spool (spool*.go), which
//     survives restarts.
//   - observe (observe.go): the telemetry of a send: sent, retried,
//     rejected, failed, and every drop, with the one set of drop reasons of
//     package telemetry.
//   - retry (retry.go): attempts again what failed for a reason that may
//     heal, with exponential backoff and jitter, or the wait a server asked
//     for (a Throttle error), until the request's max elapsed time. It knows
//     no transport: errors say whether they are Permanent.
//   - timeout (timeout.go): bounds one attempt.
//
// HTTP sinks classify an answer with HTTPError (http.go) inside their push
// function; what no generic policy covers (Librato's rate-limit 403) stays
// in the sink.
package export
