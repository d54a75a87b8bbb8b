package adapter_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"
)

// TestConcurrentCallsSharingDedupIDs reproduces a busy Mixer: calls made at
// the same moment share a dedup_id, some with the same bytes (the same
// attribute bag encodes the same way), some with others. Mixer never
// re-sends a call, so by default every one counts; with --dedup-ttl only an
// identical call under the same id is taken for a re-send.
func TestConcurrentCallsSharingDedupIDs(t *testing.T) {
	const (
		ids       = 50 // distinct dedup_ids
		identical = 4  // byte-identical calls per id
		different = 3  // calls per id with another content each
	)
	tests := []struct {
		name          string
		dedupTTL      time.Duration
		wantCounted   int
		wantDuplicate int
	}{
		{"default: every call counts", 0, ids * (identical + different), 0},
		{"dedup on: identical re-sends count once", time.Minute, ids * (1 + different), ids * (identical - 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, func(o *adapter.Options) { o.DedupTTL = tc.dedupTTL })
			var reqs []*metricpb.HandleMetricRequest
			for id := 0; id < ids; id++ {
				dedupID := strconv.Itoa(1000 + id)
				for i := 0; i < identical; i++ {
					reqs = append(reqs, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams), DedupId: dedupID,
						Instances: []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Int(1), "path", mt.Str("/same"))}})
				}
				for i := 0; i < different; i++ {
					reqs = append(reqs, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams), DedupId: dedupID,
						Instances: []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Int(1), "path", mt.Str("/other-"+strconv.Itoa(i)))}})
				}
			}
			var wg sync.WaitGroup
			errs := make([]error, len(reqs))
			for i, r := range reqs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = h.send(t, r)
				}()
			}
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			total := 0.0
			for _, agg := range h.sink(t).Series() {
				total += agg.Sum
			}
			m := h.a.Metrics()
			require.Equal(t, float64(tc.wantCounted), total, "instances that reached the sink")
			require.Equal(t, float64(tc.wantDuplicate), testutil.ToFloat64(m.InstancesRejected.WithLabelValues(telemetry.ReasonDuplicate)))
			require.Equal(t, float64(ids*(identical+different-1)), testutil.ToFloat64(m.DedupIDsReused),
				"every call after the first of an id is a reuse, whatever happens to it")
		})
	}
}
