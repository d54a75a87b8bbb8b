package loadgen

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
	"github.com/meshmetrics/meshmetrics/config"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	require.Equal(t, time.Duration(0), h.Quantile(0.5), "empty")
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	h.Record(-time.Second) // clock steps back: recorded as zero
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 500 * time.Microsecond},
		{0.9, 900 * time.Microsecond},
		{0.99, 990 * time.Microsecond},
		{1, 1000 * time.Microsecond},
	}
	for _, tt := range tests {
		got := h.Quantile(tt.q)
		require.InEpsilon(t, float64(tt.want), float64(got), 0.01, "q=%v: %v", tt.q, got)
	}
	require.Equal(t, time.Millisecond, h.Max())
	require.Equal(t, uint64(1001), h.Count())

	var other Histogram
	other.Record(time.Hour)
	other.Record(100 * time.Hour) // beyond the last bucket: still counted, Max exact
	h.Merge(&other)
	require.Equal(t, uint64(1003), h.Count())
	require.Equal(t, 100*time.Hour, h.Max())
	require.Equal(t, 100*time.Hour, h.Quantile(1))

	// Every bucket's upper edge maps back to it, and edges increase.
	for i := 1; i < numBuckets; i++ {
		require.Equal(t, i, bucketOf(upper(i)), "bucket %d", i)
		require.Greater(t, upper(i), upper(i-1))
	}
}

func TestInterval(t *testing.T) {
	tests := []struct {
		rate, perWorker float64
		workers         int
		want            time.Duration
	}{
		{0, 0, 4, 0},
		{100, 0, 4, 40 * time.Millisecond},
		{0, 10, 4, 100 * time.Millisecond},
		{100, 10, 4, 100 * time.Millisecond}, // the per-worker cap is lower
		{100, 50, 4, 40 * time.Millisecond},  // the global cap is lower
	}
	for _, tt := range tests {
		c := Config{Rate: tt.rate, RatePerWorker: tt.perWorker, Workers: tt.workers}
		require.Equal(t, tt.want, c.interval())
	}
	require.Error(t, (&Config{Address: "x", Rate: -1}).defaults())
	require.Error(t, (&Config{}).defaults(), "no address")
}

func TestRing(t *testing.T) {
	c := Config{Address: "x", InstancesPerRequest: 10, Series: 35, Dimensions: 3, Ring: 2, Seed: 7, InstanceName: "load.instance.ns"}
	cfg, err := DefaultAdapterConfig("load.instance.ns", LabelNames(3))
	require.NoError(t, err)
	ring, err := Ring(c, cfg)
	require.NoError(t, err)
	require.Len(t, ring, 4, "the ring grows to cover every series")

	series := map[string]bool{}
	for _, body := range ring {
		withID := append(append([]byte(nil), body...), appendDecimal([]byte{0x1a}, 123)...)
		var req metricpb.HandleMetricRequest
		require.NoError(t, req.Unmarshal(withID))
		require.Equal(t, "123", req.DedupId)
		require.Len(t, req.Instances, 10)
		for _, inst := range req.Instances {
			require.Equal(t, "load.instance.ns", inst.Name)
			require.Equal(t, int64(1), inst.Value.GetInt64Value())
			require.Len(t, inst.Dimensions, 3)
			series[inst.Dimensions["dim0"].GetStringValue()] = true
		}
		p, err := config.Decode(true, []byte(req.AdapterConfig.TypeUrl), req.AdapterConfig.Value)
		require.NoError(t, err)
		require.Equal(t, []string{"dim0", "dim1", "dim2"}, p.Metrics[0].LabelNames)
		require.Equal(t, config.Params_MetricInfo_COUNTER, p.Metrics[0].Kind)
	}
	require.Len(t, series, 35)

	again, err := Ring(c, cfg)
	require.NoError(t, err)
	require.Equal(t, ring, again, "a seed makes the ring reproducible")
}

// TestRunAgainstTheAdapter drives an in-process meshmetrics and checks that every instance
// of every request was counted: no request lost, no dedup_id repeated.
func TestRacyDedupSequenceCountsReuse(t *testing.T) {
	// Without concurrency the racy sequence gives each call its own id, like the exact one.
	d := encode.NewRacyDedup(7)
	require.Equal(t, []string{"7", "8", "9"}, []string{d.Next(), d.Next(), d.Next()})
	// countReused merges the workers' bitmaps: calls minus distinct ids.
	w1, w2 := &worker{trackIDs: true}, &worker{trackIDs: true}
	for _, off := range []uint64{0, 1, 2, 130} {
		w1.noteID(off)
	}
	for _, off := range []uint64{1, 130, 131} {
		w2.noteID(off)
	}
	require.Equal(t, int64(2), (&Summary{}).countReused([]*worker{w1, w2}))
}

// refusing is an adapter stand-in that answers every call with code (OK: an empty reply).
func refusing(t *testing.T, code codes.Code) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.ForceServerCodecV2(conn.Codec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var r conn.Raw
		if err := stream.RecvMsg(&r); err != nil {
			return err
		}
		if code == codes.OK {
			return stream.SendMsg(&conn.Raw{})
		}
		return status.Error(code, "no")
	}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestErrorsByCode(t *testing.T) {
	s, err := Run(context.Background(), Config{Address: refusing(t, codes.ResourceExhausted), Workers: 2, Requests: 7, InstancesPerRequest: 1, Series: 1})
	require.NoError(t, err)
	require.Equal(t, int64(7), s.Requests)
	require.Equal(t, int64(7), s.Errors)
	require.Equal(t, map[string]int64{"ResourceExhausted": 7}, s.ErrorsByCode)
}

func TestDurationEndsTheRun(t *testing.T) {
	s, err := Run(context.Background(), Config{Address: refusing(t, codes.OK), Workers: 2, Duration: 50 * time.Millisecond,
		Rate: 100, InstancesPerRequest: 1, Series: 1})
	require.NoError(t, err)
	require.Positive(t, s.Requests)
	require.Zero(t, s.Errors, "calls in flight at the end of the run finish normally")
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		c       Config
		elapsed time.Duration
		sent    int64
		want    string
	}{
		{Config{Requests: 100, InstancesPerRequest: 10}, time.Second, 50, "[===============>              ]  50%  50 requests  500 instances/s"},
		{Config{Duration: 4 * time.Second, InstancesPerRequest: 1}, time.Second, 10, "[=======>                      ]  25%  10 requests  10 instances/s"},
		{Config{Requests: 10, InstancesPerRequest: 1}, time.Second, 10, "[==============================] 100%  10 requests  10 instances/s"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, progressLine(tt.c, tt.elapsed, tt.sent))
	}

	var out strings.Builder
	stop := progress(Config{Progress: &out, Requests: 1, InstancesPerRequest: 1}, time.Now(), new(atomic.Int64))
	stop()
	require.True(t, strings.HasSuffix(out.String(), "\r\033[K"), "the line is cleared at the end")
}
