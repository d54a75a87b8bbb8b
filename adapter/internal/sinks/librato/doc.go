// Package librato is the Librato/AppOptics sink: it aggregates samples per
// series and period, and pushes the closed periods to the tagged
// (/v1/measurements) or legacy (/v1/metrics) API through the export
// helper (queue or spool, retry, timeout, telemetry). It also holds the
// APIs' payload types and name and tag rules; libratotest is a fake server.
//
// Files: config.go (the librato block's defaults and rules), factory.go
// (params to sink, Key, Check), sink.go (the sink's lifecycle), period.go
// (closing periods), aggregate.go (per-series state), identity.go (names,
// tags, sources), encode.go (requests), send.go (one attempt: HTTP, auth,
// rate limits), token.go (token sources). docs/librato.md is the user's
// view.
package librato
