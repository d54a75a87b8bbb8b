// Package otlp is the OpenTelemetry (OTLP) sink: it keeps every series of
// the handler configs' metrics, exports them once per interval as OTLP
// metrics (counters as monotonic sums, gauges as gauges, distributions as
// explicit-bucket histograms, cumulative or delta), with the replica name as
// the service.instance.id resource attribute, over gRPC
// (MetricsService/Export) or HTTP (POST /v1/metrics), through the export
// helper (queue or spool, retry, timeout, telemetry). The OTLP types are the
// generated ones of go.opentelemetry.io/proto/otlp.
//
// Files: config.go (the otlp block's defaults and rules), factory.go
// (params to sink, Key, Check), sink.go (the sink's lifecycle), state.go
// (one series' value), encode.go (data points into size-capped requests),
// send.go (one attempt over gRPC or HTTP, the OTLP spec's retryable
// answers, partial success), headers.go (static and file headers), tls.go
// (TLS with a reloaded client certificate). otlptest is a fake receiver
// with fault injection; otelcoltest runs the real OpenTelemetry Collector.
// docs/otlp.md is the user's view.
package otlp
