package faults_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
)

// TestHugeDedupIDsLeaveNoHeap is the second attack: 150 calls, each
// with a dedup_id of its own of 8 MB (not a number, as Mixer's are), kept
// 1.2 GB of heap when ids were remembered whole. Ids are now remembered as
// keyed 64-bit hashes, whatever their length, in two generations capped in
// count and rotated in time: the live heap after the attack grows by less
// than 16 MiB, with deduplication on or off. Every instance is delivered,
// and a call sent again with one of the ids counts as a reuse (and, with
// deduplication on, is dropped as a duplicate and counted).
func TestHugeDedupIDsLeaveNoHeap(t *testing.T) {
	const (
		calls  = 150
		idSize = 8 << 20
	)
	for _, ttl := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprintf("dedup-ttl=%s", ttl), func(t *testing.T) {
			h := start(t, setup{kind: rwKind, tweak: func(o *adapter.Options) { o.DedupTTL = ttl }})
			cfg := h.params()
			client := metricpb.NewHandleMetricServiceClient(h.conn)
			id := func(i int) string { return fmt.Sprintf("%08d", i) + strings.Repeat("z", idSize-8) }
			send := func(i int) {
				_, err := client.HandleMetric(context.Background(), &metricpb.HandleMetricRequest{AdapterConfig: cfg,
					Instances: instances(1, paths, i), DedupId: id(i)})
				require.NoError(t, err)
			}
			send(-1) // builds the handler, its sink and the window's first generation
			before := liveHeap()
			for i := range calls {
				send(i)
			}
			after := liveHeap()
			send(7) // an id seen before, with the same content
			require.NoError(t, h.flush(30*time.Second))

			reused := h.counters("meshmetrics_dedup_ids_reused_total", "")[""]
			require.Equal(t, 1.0, reused, "the id sent again is recognised")
			accepted := h.counters("meshmetrics_instances_accepted_total", "")[""]
			want := float64(calls + 2)
			if ttl > 0 {
				want--
				require.Equal(t, 1.0, h.counters("meshmetrics_instances_rejected_total", "reason")["duplicate_request"])
			}
			require.Equal(t, want, accepted)
			require.Equal(t, accepted, h.rw.Total(rwName), "every instance counted once is delivered")
			growth := int64(after) - int64(before)
			t.Logf("figures %s: %d calls with ids of %d MiB; live heap %d MiB before, %d MiB after (growth %d KiB)",
				t.Name(), calls, idSize>>20, before>>20, after>>20, growth>>10)
			require.Less(t, growth, int64(16<<20), "ids are not kept")
		})
	}
}
