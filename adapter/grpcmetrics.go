package adapter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// grpcMetrics count what the gRPC server refuses before a caller is trusted
// or its messages read, and show what it holds. The counters exist at 0
// from the start.
type grpcMetrics struct {
	connectionsRefused prometheus.Counter
	refused            *prometheus.CounterVec
}

func newGRPCMetrics(reg prometheus.Registerer, admission func() grpcserver.Admission) *grpcMetrics {
	m := &grpcMetrics{
		connectionsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_grpc_connections_refused_total",
			Help: "gRPC connections closed at once because --grpc-max-connections were open.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_grpc_refused_total",
			Help: "gRPC calls and streams refused before their messages were read: unknown_method, too_many_calls (--grpc-max-concurrent-calls), too_many_streams (--als-max-streams), bytes_in_flight (--grpc-max-bytes-in-flight). Token and TLS refusals are in meshmetrics_auth_refused_total.",
		}, []string{"reason"}),
	}
	for _, r := range telemetry.GRPCRefusedReasons() {
		m.refused.WithLabelValues(r)
	}
	reg.MustRegister(m.connectionsRefused, m.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshmetrics_grpc_open_calls",
			Help: "Unary gRPC calls (HandleMetric, Validate, health) open now.",
		}, func() float64 { return float64(admission().Calls) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshmetrics_grpc_open_streams",
			Help: "Long-lived gRPC streams (access logs, health watches) open now.",
		}, func() float64 { return float64(admission().Streams) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshmetrics_grpc_bytes_in_flight",
			Help: "Bytes of gRPC messages being received (reserved at --max-recv-msg-size each) or handled now; at most --grpc-max-bytes-in-flight.",
		}, func() float64 { return float64(admission().BytesInFlight) }),
	)
	return m
}
