package adapter_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"
)

// TestCallsAreAdmittedBeforeTheyAreRead: past --grpc-max-concurrent-calls
// a call is refused when its headers arrive (ResourceExhausted, counted);
// a call whose message does not fit in the bytes in flight waits, then is
// refused (counted); an unknown method is refused as Unimplemented
// (counted). Slots and bytes come back when calls end.
func TestCallsAreAdmittedBeforeTheyAreRead(t *testing.T) {
	h := start(t, func(o *adapter.Options) {
		o.GRPCMaxConcurrentCalls = 2
		o.MaxRecvMsgSize = 1 << 20
		o.GRPCMaxBytesInFlight = 1 << 20 // one message at a time
	})
	reg := h.a.Registry()
	count := func(reason string) float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() != "meshmetrics_grpc_refused_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
		return -1
	}
	require.Zero(t, count("too_many_calls"), "the counters exist at 0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two calls open, their messages not sent: one holds the bytes in
	// flight while it waits for its message, the other waits for room.
	desc := &grpc.StreamDesc{ClientStreams: true}
	for range 2 {
		_, err := h.conn.NewStream(ctx, desc, mixer.HandleMetricMethod)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return gauge(t, h, "meshmetrics_grpc_open_calls") == 2
	}, 5*time.Second, 10*time.Millisecond)

	call := func() error {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_, err := metricpb.NewHandleMetricServiceClient(h.conn).HandleMetric(cctx, &metricpb.HandleMetricRequest{
			AdapterConfig: cfg(t, counterParams), Instances: []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Int(1))}})
		return err
	}
	err := call()
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "a third call: %v", err)
	require.Equal(t, 1.0, count("too_many_calls"))

	// One of the held calls waits for room, then is refused.
	require.Eventually(t, func() bool { return count("bytes_in_flight") == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1.0, gauge(t, h, "meshmetrics_grpc_open_calls"), "the refused call ended")
	cancel() // the other ends
	require.Eventually(t, func() bool {
		return gauge(t, h, "meshmetrics_grpc_open_calls") == 0 && gauge(t, h, "meshmetrics_grpc_bytes_in_flight") == 0
	}, 5*time.Second, 10*time.Millisecond, "slots and bytes given back")
	require.NoError(t, call(), "a call fits again")

	st, err := h.conn.NewStream(context.Background(), desc, "/no.such.Service/Method")
	require.NoError(t, err)
	require.NoError(t, st.CloseSend())
	require.Equal(t, codes.Unimplemented, status.Code(st.RecvMsg(new(any))))
	require.Equal(t, 1.0, count("unknown_method"))
}

// gauge reads one of the adapter's own gauges.
func gauge(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	mfs, err := h.a.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
