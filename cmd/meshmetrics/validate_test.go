package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func validate(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := validateCode(args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

var crdFlags = []string{"-f", "../../deploy/kubernetes/adapter.yaml", "-f", "../../deploy/kubernetes/template-metric.yaml"}

// TestValidateExitsNonZeroAndNamesEachProblem: `meshmetrics validate` on
// configcheck's broken config prints each finding with file, line, object
// and field, a count, and exits 1; a clean config exits 0; bad usage 2.
func TestValidateExitsNonZeroAndNamesEachProblem(t *testing.T) {
	code, out, _ := validate(t, nil, append(crdFlags, "-f", "../../adapter/configcheck/testdata/broken.yaml")...)
	require.Equal(t, 1, code)
	for _, line := range []string{
		"../../adapter/configcheck/testdata/broken.yaml:17: error: handler prom.handler.istio-system: params.metrics[0].buckets: only a DISTRIBUTION has buckets\n",
		"../../adapter/configcheck/testdata/broken.yaml:21: error: handler prom.handler.istio-system: params.metrics[1].kind: required: GAUGE, COUNTER or DISTRIBUTION\n",
		`../../adapter/configcheck/testdata/broken.yaml:50: error: handler good.handler.istio-system: params.metrics[0].label_names[1]: label "response_cod" of metric requests_total is not a dimension`,
		"(did you mean request.path?)",
		"8 errors, 1 warning: 3 handlers (3 of meshmetrics), 5 instances, 3 rules\n",
	} {
		require.Contains(t, out, line)
	}

	samples := append(crdFlags, "-f", "../../deploy/kubernetes/samples/analyticcounter.yaml", "-f", "../../deploy/kubernetes/samples/analyticprom-prometheus.yaml")
	code, out, _ = validate(t, nil, append(samples, "--digests")...)
	require.Equal(t, 0, code, out)
	require.Regexp(t, `^handler analyticprom-prometheus.handler.istio-system: handler=[0-9a-f]{12} in the adapter's logs\n0 errors, 0 warnings: 1 handlers \(1 of meshmetrics\), 1 instances, 1 rules\n$`, out)

	// Warnings fail only with --strict.
	unused := filepath.Join(t.TempDir(), "unused.yaml")
	require.NoError(t, os.WriteFile(unused, []byte("apiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: spare, namespace: istio-system}\nspec: {template: metric, params: {value: \"1\"}}\n"), 0o600))
	code, out, _ = validate(t, nil, append(samples, "-f", unused)...)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, unused+":1: warning: instance spare.instance.istio-system: no rule sends this instance to any handler: it is never built\n")
	code, _, _ = validate(t, nil, append(samples, "-f", unused, "--strict")...)
	require.Equal(t, 1, code)

	code, _, errOut := validate(t, nil)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "nothing to check")
	code, _, errOut = validate(t, nil, "--config-dirr", "x")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "flag provided but not defined: --config-dirr")
	code, out, _ = validate(t, nil, "--help")
	require.Equal(t, 0, code)
	require.True(t, strings.HasPrefix(out, "Usage: meshmetrics validate"))
}

// TestValidateTakesTheConfigDirectoryOfTheEnvironment: in a pod,
// `meshmetrics validate` checks the directory MESHMETRICS_CONFIG_DIR names,
// as the adapter loads it.
func TestValidateTakesTheConfigDirectoryOfTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: h, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "x:1"}
  params:
    metrics:
    - {name: m, instance_name: i.instance.istio-system, kind: COUNTER, buckets: {explicit_buckets: {bounds: [1]}}}
`), 0o600))
	code, out, _ := validate(t, map[string]string{"MESHMETRICS_CONFIG_DIR": dir})
	require.Equal(t, 1, code)
	require.Contains(t, out, filepath.Join(dir, "bad.yaml")+":9: error: handler h.handler.istio-system: params.metrics[0].buckets: only a DISTRIBUTION has buckets\n")
}
