package telemetry_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

type noQueues struct{}

func (noQueues) Stats() []telemetry.QueueStat { return nil }

// gathered maps "family{label=value,...}" to each sample's value.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestReasonCountersExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := telemetry.New(reg, func() int { return 0 }, noQueues{})
	m.InitDropped("prometheus", telemetry.SinkDropReasons()...)
	got := gathered(t, reg)
	check := func(key string) {
		t.Helper()
		v, ok := got[key]
		require.True(t, ok, "%s does not exist before the first event", key)
		require.Zero(t, v)
	}
	for _, r := range telemetry.RejectionReasons() {
		check("meshmetrics_instances_rejected_total{reason=" + r + "}")
	}
	for _, r := range telemetry.ConfigErrorReasons() {
		check("meshmetrics_config_errors_total{reason=" + r + "}")
	}
	for _, r := range telemetry.AuthRefusedReasons() {
		check("meshmetrics_auth_refused_total{reason=" + r + "}")
	}
	for _, r := range telemetry.SinkDropReasons() {
		check("meshmetrics_instances_dropped_total{reason=" + r + ",sink=prometheus}")
	}
	// InitDropped does not reset a counter that already counts.
	m.Dropped("prometheus", telemetry.DropQueueFull, 3)
	m.InitDropped("prometheus", telemetry.SinkDropReasons()...)
	require.Equal(t, 3.0, gathered(t, reg)["meshmetrics_instances_dropped_total{reason=queue_full,sink=prometheus}"])
}

// TestReasonListsAreComplete reads reasons.go: every Reason* constant is a
// rejection reason, every Drop* constant a drop reason and every Auth*
// constant an auth refusal, so a reason added later exists at 0 too (or is
// documented, for drops).
func TestReasonListsAreComplete(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "reasons.go", nil, 0)
	require.NoError(t, err)
	var reasons, drops, auths []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Values) != 1 {
			return true
		}
		lit, ok := vs.Values[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		v, err := strconv.Unquote(lit.Value)
		require.NoError(t, err)
		switch name := vs.Names[0].Name; {
		case strings.HasPrefix(name, "Reason"):
			reasons = append(reasons, v)
		case strings.HasPrefix(name, "Drop"):
			drops = append(drops, v)
		case strings.HasPrefix(name, "Auth"):
			auths = append(auths, v)
		}
		return true
	})
	require.NotEmpty(t, reasons)
	require.NotEmpty(t, drops)
	for _, r := range reasons {
		require.True(t, slices.Contains(telemetry.RejectionReasons(), r), "rejection reason %s is not in RejectionReasons", r)
	}
	var documented []string
	for _, d := range telemetry.DropReasons() {
		documented = append(documented, d.Name)
	}
	for _, r := range drops {
		require.True(t, slices.Contains(documented, r), "drop reason %s is not in DropReasons", r)
	}
	require.NotEmpty(t, auths)
	for _, r := range auths {
		require.True(t, slices.Contains(telemetry.AuthRefusedReasons(), r), "auth refusal %s is not in AuthRefusedReasons", r)
	}
}
