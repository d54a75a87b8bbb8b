package otlp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"time"

	collpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// ExportMethod is the gRPC method of the OTLP metrics service.
const ExportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// maxResponseBody bounds how much of an answer is read: an export
// response, or an error's google.rpc.Status.
const maxResponseBody = 64 << 10

func userAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "meshmetrics/" + v
}

// pushGRPC makes one attempt at exporting r over gRPC (export.PushFunc).
// The body is sent as it was encoded (rawCodec): nothing is marshalled
// again per attempt.
func (s *Sink) pushGRPC(ctx context.Context, r *request) error {
	md := metadata.MD{}
	s.headers.each(func(name, value string) { md.Append(name, value) })
	ctx = metadata.NewOutgoingContext(ctx, md)
	opts := []grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}
	if s.cfg.gzip {
		opts = append(opts, grpc.UseCompressor(gzip.Name))
	}
	var resp rawMessage
	err := s.conn.Invoke(ctx, ExportMethod, rawMessage(r.body), &resp, opts...)
	if err != nil {
		return classifyGRPC(err, fmt.Errorf("otlp export to %s (%d data points): %w", s.cfg.endpoint.target, r.points, err))
	}
	return s.accepted(r, resp)
}

// accepted reads the answer to a request the receiver took: a partial
// success, or nothing to report. An answer that does not decode is logged:
// the data was taken, and it says nothing of rejected points.
func (s *Sink) accepted(r *request, raw []byte) error {
	var out collpb.ExportMetricsServiceResponse
	if err := proto.Unmarshal(raw, &out); err != nil {
		s.logOnce("bad-response", "cannot decode the receiver's export response: "+err.Error())
		out.Reset()
	}
	return s.partialSuccess(r, out.GetPartialSuccess())
}

// retryableCodes are the gRPC codes the OTLP specification retries;
// RESOURCE_EXHAUSTED only when the server sent RetryInfo.
var retryableCodes = map[codes.Code]bool{
	codes.Canceled: true, codes.DeadlineExceeded: true, codes.Aborted: true,
	codes.OutOfRange: true, codes.Unavailable: true, codes.DataLoss: true,
}

// classifyGRPC marks cause for the retry layer: Permanent for the codes the
// OTLP specification does not retry, a Throttle for the wait a RetryInfo
// names, else plain.
func classifyGRPC(err, cause error) error {
	st, ok := status.FromError(err)
	if !ok {
		return cause // not from the server: a transport failure, retried
	}
	delay, hasDelay := retryDelay(st)
	switch {
	case st.Code() == codes.ResourceExhausted && hasDelay:
	case !retryableCodes[st.Code()]:
		return export.Permanent(cause)
	}
	if hasDelay {
		return export.Throttle(cause, delay)
	}
	return cause
}

func retryDelay(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// pushHTTP makes one attempt at posting r (export.PushFunc).
func (s *Sink) pushHTTP(ctx context.Context, r *request) error {
	body := r.body
	if s.cfg.gzip {
		gz, err := r.gzipped()
		if err != nil {
			return export.Permanent(fmt.Errorf("otlp: gzip: %w", err))
		}
		body = gz
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.endpoint.url, bytes.NewReader(body))
	if err != nil {
		return export.Permanent(fmt.Errorf("otlp request: %w", err))
	}
	s.headers.each(func(name, value string) { req.Header.Set(name, value) })
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", s.agent)
	if s.cfg.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		//nolint:contextcheck // the retry policy reads the error, not the request's context
		// net/http's error carries the whole URL: redacted too.
		return export.ClassifyHTTP(nil, err, fmt.Errorf("otlp export to %s (%d data points): %w", redactURL(s.cfg.endpoint.url), r.points, config.RedactURLError(err)))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if resp.StatusCode/100 == 2 {
		return s.accepted(r, raw)
	}
	cause := fmt.Errorf("otlp export to %s (%d data points): HTTP %d: %s", redactURL(s.cfg.endpoint.url), r.points, resp.StatusCode, httpErrorMessage(raw))
	return classifyHTTPStatus(resp, cause)
}

// classifyHTTPStatus: the OTLP specification retries 429, 502, 503 and
// 504 (with Retry-After when given) and nothing else.
func classifyHTTPStatus(resp *http.Response, cause error) error {
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		if d, ok := export.RetryAfter(resp); ok {
			return export.Throttle(cause, d)
		}
		return cause
	}
	return export.Permanent(cause)
}

// httpErrorMessage reads an error answer: the google.rpc.Status the OTLP
// specification asks for, or the start of whatever else came.
func httpErrorMessage(raw []byte) string {
	var st spb.Status
	if proto.Unmarshal(raw, &st) == nil && st.GetMessage() != "" {
		return st.GetMessage()
	}
	if len(raw) > 512 {
		raw = raw[:512]
	}
	return string(bytes.ToValidUTF8(bytes.TrimSpace(raw), []byte("?")))
}

// partialSuccess counts the data points a receiver took the request
// without (rejected_data_points) as dropped, logged at most once per log
// interval. The receiver does not say which points: the instances counted
// are the request's in proportion to the points rejected (exact when the
// points carry as many instances each, and always for cumulative sinks,
// which count points). A message without rejected points is a warning.
func (s *Sink) partialSuccess(r *request, ps *collpb.ExportMetricsPartialSuccess) error {
	if ps == nil || (ps.GetRejectedDataPoints() == 0 && ps.GetErrorMessage() == "") {
		return nil
	}
	rejected := ps.GetRejectedDataPoints()
	if rejected <= 0 {
		s.logOnce("partial-warning", "the receiver took every data point but warns: "+ps.GetErrorMessage())
		return nil
	}
	rejected = min(rejected, int64(r.points))
	instances := r.instances
	if int(rejected) < r.points {
		instances = int((int64(r.instances)*rejected + int64(r.points)/2) / int64(r.points))
	}
	s.env.Metrics.Dropped(s.name, telemetry.DropPartialRejected, instances)
	err := fmt.Errorf("otlp receiver rejected %d of %d data points (%d instances): %s", rejected, r.points, instances, ps.GetErrorMessage())
	s.logOnce(telemetry.DropPartialRejected, err.Error())
	return export.Partial(err)
}

func (s *Sink) logOnce(key, msg string) {
	s.env.Limiter.Log(logrus.WarnLevel, s.name+"|"+key, logrus.Fields{"sink": s.name}, s.env.Secrets.RedactString(msg))
}

// rawMessage is an encoded protobuf message, sent and received as is.
type rawMessage []byte

// rawCodec passes encoded messages through: the request was marshalled
// once when it was built (and may come from the spool).
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(rawMessage)
	if !ok {
		return nil, fmt.Errorf("otlp codec: %T is not an encoded message", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(m)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("otlp codec: %T is not an encoded message", v)
	}
	*m = data.Materialize()
	return nil
}
