package configcheck_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/configcheck"
)

var crds = []string{"../../deploy/kubernetes/adapter.yaml", "../../deploy/kubernetes/template-metric.yaml"}

const broken = "testdata/broken.yaml"

// TestFindsWhatTheAdapterRefusesAndWhatItGetsWrong checks the mistakes of
// testdata/broken.yaml: each is found once, at its line, with its object,
// field and reason.
func TestFindsWhatTheAdapterRefusesAndWhatItGetsWrong(t *testing.T) {
	r := configcheck.Check(configcheck.Options{Files: append(crds, broken)})
	type want struct {
		severity configcheck.Severity
		line     int
		object   string
		field    string
		message  string
	}
	wants := []want{
		// The adapter's own params validation.
		{configcheck.Error, 17, "handler prom.handler.istio-system", "params.metrics[0].buckets", "only a DISTRIBUTION has buckets"},
		{configcheck.Error, 21, "handler prom.handler.istio-system", "params.metrics[1].kind", "required: GAUGE, COUNTER or DISTRIBUTION"},
		{configcheck.Error, 32, "handler histogram.handler.istio-system", "params.metrics[0]", `a DISTRIBUTION cannot have a label named "le"`},
		// Cross-checks.
		{configcheck.Error, 50, "handler good.handler.istio-system", "params.metrics[0].label_names[1]",
			`label "response_cod" of metric requests_total is not a dimension of instance requestcount.instance.istio-system (testdata/broken.yaml:58): every series gets response_cod="" (did you mean response_code?)`},
		{configcheck.Warning, 55, "handler good.handler.istio-system", "params.metrics[2].instance_name",
			"no rule sends instance forgotten.instance.istio-system to this handler: metric forgotten stays empty"},
		{configcheck.Error, 75, "instance peer.instance.istio-system", "params.value", `"source.ip" is an IP_ADDRESS, which no metric can count: metric peers (GAUGE)`},
		{configcheck.Error, 112, "rule good.rule.istio-system", "actions[0]",
			"sends instance requestsize.instance.istio-system to handler good.handler.istio-system (testdata/broken.yaml:37), but no metric of the handler has instance_name requestsize.instance.istio-system or requestsize: the adapter refuses every such instance (unknown_instance)"},
		{configcheck.Error, 115, "rule nohandler.rule.istio-system", "", "Handler not found: handler='nosuch'"},
		{configcheck.Error, 123, "rule typo.rule.istio-system", "",
			`expression "request.pth": unknown attribute 'request.pth' (did you mean request.path?)`},
	}
	for _, w := range wants {
		found := 0
		for _, f := range r.Findings {
			if f.File == broken && f.Line == w.line && f.Severity == w.severity && f.Object == w.object && f.Field == w.field && strings.Contains(f.Message, w.message) {
				found++
			}
		}
		require.Equal(t, 1, found, "want %+v once in:\n%s", w, findings(r))
	}
	require.Len(t, r.Findings, len(wants), "nothing else:\n%s", findings(r))
	require.Equal(t, 8, r.Errors())
	require.Equal(t, 3, r.LocalHandlers)
	require.Equal(t, 5, r.Instances)
	require.Equal(t, 3, r.Rules)
}

func findings(r *configcheck.Result) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}

// TestFindingsSayWhereWhatAndWhy is a finding's one line.
func TestFindingsSayWhereWhatAndWhy(t *testing.T) {
	f := configcheck.Finding{Severity: configcheck.Error, File: "h.yaml", Line: 12, Object: "handler h.handler.ns", Field: "params.metrics[0].kind",
		Message: "required"}
	require.Equal(t, "h.yaml:12: error: handler h.handler.ns: params.metrics[0].kind: required", f.String())
	require.Equal(t, "warning: unused", configcheck.Finding{Severity: configcheck.Warning, Message: "unused"}.String())
}

// TestTheSamplesAreClean: the shipped samples pass, and a valid
// meshmetrics handler is named by the digest a running adapter logs.
func TestTheSamplesAreClean(t *testing.T) {
	r := configcheck.Check(configcheck.Options{Files: append(crds, "../../deploy/kubernetes/samples/analyticcounter.yaml",
		"../../deploy/kubernetes/samples/analyticprom-prometheus.yaml")})
	require.Empty(t, r.Findings)
	require.Len(t, r.Digests["analyticprom-prometheus.handler.istio-system"], 12)
}

// TestAMissingCredentialFileIsAWarning: a file that exists only where the
// adapter runs (a mounted Secret) cannot be judged here.
func TestAMissingCredentialFileIsAWarning(t *testing.T) {
	r := configcheck.Check(configcheck.Options{Files: append(crds, "../../deploy/kubernetes/samples/analyticcounter.yaml",
		"../../deploy/kubernetes/samples/analyticprom-librato.yaml")})
	require.Zero(t, r.Errors(), findings(r))
	require.Len(t, r.Findings, 1)
	require.Equal(t, configcheck.Warning, r.Findings[0].Severity)
	require.Contains(t, r.Findings[0].Message, "/var/run/secrets/librato/token: no such file or directory")
}

// mixerlessDir is a config directory of Istio's standard instances and
// rules with handler.
func mixerlessDir(t *testing.T, handler string) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile("../internal/mixerless/testdata/istio/standard.yaml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "standard.yaml"), b, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "handler.yaml"), []byte(handler), 0o600))
	return dir
}

const prometheusHandler = `apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: prometheus, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    metrics:
    - name: requests_total
      instance_name: requestcount.instance.istio-system
      kind: COUNTER
      label_names: [reporter, source_workload, %s]
    - name: tcp_sent_bytes_total
      instance_name: tcpbytesent.instance.istio-system
      kind: COUNTER
      label_names: [destination_service]
    - name: tcp_received_bytes_total
      instance_name: tcpbytereceived.instance.istio-system
      kind: COUNTER
      label_names: [destination_service]
`

// TestAMixerlessDirectory is checked as the adapter loads it: the
// embedded adapter and template added, the same cross-checks, and what
// only the access-log compilation knows.
func TestAMixerlessDirectory(t *testing.T) {
	r := configcheck.Check(configcheck.Options{ConfigDir: mixerlessDir(t, strings.Replace(prometheusHandler, "%s", "response_code", 1))})
	require.Empty(t, r.Findings)
	require.Equal(t, 1, r.LocalHandlers)

	dir := mixerlessDir(t, strings.Replace(prometheusHandler, "%s", "response_status", 1))
	r = configcheck.Check(configcheck.Options{ConfigDir: dir})
	require.Len(t, r.Findings, 1, findings(r))
	f := r.Findings[0]
	require.Equal(t, filepath.Join(dir, "handler.yaml"), f.File)
	require.Equal(t, 12, f.Line)
	require.Equal(t, "params.metrics[0].label_names[2]", f.Field)
	require.Contains(t, f.Message, `label "response_status" of metric requests_total is not a dimension of instance requestcount.instance.istio-system`)

	// A header mapped to an attribute the manifests do not declare: only
	// the Mixer-less compilation sees it.
	r = configcheck.Check(configcheck.Options{ConfigDir: mixerlessDir(t, strings.Replace(prometheusHandler, "%s", "response_code", 1)),
		HeaderAttributes: map[string]string{"x-workload": "source.workload.nmae"}})
	require.Equal(t, 1, r.Errors(), findings(r))
	require.Contains(t, r.Findings[0].Message, "source.workload.nmae")
}
