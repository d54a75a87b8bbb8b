package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/loadgen"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
)

type result struct {
	code           int
	stdout, stderr string
}

func mockmixer(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut strings.Builder
	code := run(context.Background(), args, env{getenv: func(string) string { return "" }, stdout: &out, stderr: &errOut})
	return result{code, out.String(), errOut.String()}
}

func root(parts ...string) string {
	return filepath.Join(append([]string{mixertest.RepoRoot()}, parts...)...)
}

// sampleFlags are -f flags for the adapter, template and the Prometheus sample.
func sampleFlags() []string {
	var out []string
	for _, f := range []string{
		root("deploy", "kubernetes", "adapter.yaml"), root("deploy", "kubernetes", "template-metric.yaml"),
		root("deploy", "kubernetes", "samples", "analyticcounter.yaml"), root("deploy", "kubernetes", "samples", "analyticprom-prometheus.yaml"),
	} {
		out = append(out, "-f", f)
	}
	return out
}

func TestReportFromAttributesFile(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	r := mockmixer(t, append(append([]string{"report"}, sampleFlags()...), "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a),
		"--attributes-file", root("testdata", "attributes", "analytic.yaml"))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "summary: 10 reports, 10 bags, 6 matched a rule, 6 calls (0 failed), 6 instances sent, 0 instance errors")
	require.Contains(t, r.stdout, "bag 1: matched analyticprom.rule.istio-system; not matched none")
	require.Contains(t, r.stdout, "HandleMetric -> handler analyticprom-prometheus.handler.istio-system at "+a.GRPCAddr())
	require.Contains(t, r.stdout, `request_path = "/v1/damage?analytic=2" (string)`)
	require.Contains(t, r.stdout, "<- OK: ReportResult")
	require.Contains(t, r.stdout, "no instance for any handler: nothing sent")
	require.NoError(t, a.Recorded(t).WaitSamples(t.Context(), 6))

	// Batched: one report of 10 bags makes one call with 6 instances.
	r = mockmixer(t, append(append([]string{"report"}, sampleFlags()...), "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a),
		"--attributes-file", root("testdata", "attributes", "analytic.yaml"), "--report_batch_size", "10", "-q")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "summary: 1 reports, 10 bags, 6 matched a rule, 1 calls (0 failed), 6 instances sent, 0 instance errors\n"+
		"adapter: no instance dropped or rejected by the adapter ("+metricsURL(a)+")\n", r.stdout)
}

func TestReportFromMixcFlags(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	r := mockmixer(t, append(append([]string{"report"}, sampleFlags()...), "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a), "-s", "request.path=/v1/damage?analytic=1,request.method=GET",
		"-a", "response.code=503", "--report_batch_size", "2", "-r", "3", "-q")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "summary: 3 reports, 6 bags, 6 matched a rule, 3 calls (0 failed), 6 instances sent")
	require.NoError(t, a.Recorded(t).WaitSamples(t.Context(), 6))
	require.Equal(t, 6, a.Recorded(t).Series()[mixertest.Key("istio_analytic_requests", "/v1/damage?analytic=1", "GET", "503", "unknown", "unknown")].Count)
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestReportErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown attribute", append(sampleFlags(), "-s", "request.pth=/x"), exitUsage, `unknown attribute "request.pth": no attribute manifest declares it (did you mean request.path?)`},
		{"type error in an attribute", append(sampleFlags(), "-s", "response.code=200"), exitUsage, "attribute response.code is INT64 in the attribute manifest: -s gives STRING; use -i"},
		{"bad YAML", []string{"-f", write(t, "bad.yaml", "kind: rule\nmetadata: [\n"), "-s", "a=b"}, exitUsage, "bad.yaml:2: invalid YAML"},
		{"missing handler", []string{"-f", root("deploy", "kubernetes", "template-metric.yaml"), "-f", root("deploy", "kubernetes", "samples", "analyticcounter.yaml"),
			"-f", write(t, "rule.yaml", "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r, namespace: istio-system}\nspec: {actions: [{handler: nosuch, instances: [analyticcounter]}]}\n"),
			"-s", "request.path=/"}, exitUsage, "Handler not found: handler='nosuch'"},
		{"no config", []string{"-s", "a=b"}, exitUsage, "no config: pass the adapter, template, handler, instance and rule CRDs with -f"},
		{"no attributes", sampleFlags(), exitUsage, "give attributes with mixc's flags"},
		{"bad attributes file", append(sampleFlags(), "--attributes-file", write(t, "bags.yaml", "- response.code: ok\n")), exitUsage, "bags.yaml:1: response.code: want an INT64 (an integer), got \"ok\""},
		{"stray argument", append(sampleFlags(), "extra"), exitUsage, `unexpected arguments ["extra"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mockmixer(t, append([]string{"report"}, tt.args...)...)
			require.Equal(t, tt.code, r.code, r.stderr)
			require.Contains(t, r.stderr, tt.stderr)
			require.Empty(t, r.stdout, "nothing is sent when the input is wrong")
		})
	}

	// No adapter listening: the call fails and so does the command.
	r := mockmixer(t, append([]string{"report"}, append(sampleFlags(), "--address", "127.0.0.1:1", "-s", "request.path=/v1/damage?analytic=1")...)...)
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, "<- Unavailable:")
	require.Contains(t, r.stdout, "1 calls (1 failed)")

	// The samples' in-cluster address, without --address: the reason is said.
	r = mockmixer(t, append([]string{"report"}, append(sampleFlags(), "--timeout", "2s", "-s", "request.path=/v1/damage?analytic=1")...)...)
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, `host "meshmetrics.istio-system.svc.cluster.local" does not resolve here`)
	require.Contains(t, r.stdout, "pass --address 127.0.0.1:50000")
}

func TestReportWarnsAboutFormsMixerRejects(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	rule := write(t, "rule.yaml", `apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: notanalytic, namespace: istio-system}
spec:
  match: '!startsWith(request.path, "/v1/damage?analytic=")'
  actions: [{handler: analyticprom-prometheus, instances: [analyticcounter]}]
`)
	r := mockmixer(t, append(append([]string{"report"}, sampleFlags()...), "-f", rule, "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a), "-s", "request.path=/other", "-q")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stderr, "warning: rule notanalytic.rule.istio-system ("+rule+":1): match: ")
	require.Contains(t, r.stderr, "a real Mixer rejects the ! operator (unknown function: NOT)")
	require.Contains(t, r.stderr, `write request.path.startsWith("/v1/damage?analytic=") instead`)
	require.Contains(t, r.stdout, "1 matched a rule")
}

func TestSend(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	instances := write(t, "instances.yaml", `instances:
- name: analyticcounter.instance.istio-system
  value: 3
  dimensions:
    request_path: /v1/damage?analytic=send
    response_code: {int64: 201}
`)
	cfg := []string{"-f", root("deploy", "kubernetes", "adapter.yaml"), "-f", root("deploy", "kubernetes", "samples", "analyticprom-prometheus.yaml")}
	r := mockmixer(t, append(append([]string{"send"}, cfg...), "--address", a.GRPCAddr(), "--instances", instances, "--dedup-id", "77")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "dedup_id 77, adapter_config type.googleapis.com/adapter.meshmetrics.config.Params")
	require.Contains(t, r.stdout, "<- OK: ReportResult")
	require.NoError(t, a.Recorded(t).WaitSamples(t.Context(), 1))
	require.Equal(t, mixertest.Aggregate{Count: 1, Sum: 3, Min: 3, Max: 3, Last: 3},
		a.Recorded(t).Series()[mixertest.Key("istio_analytic_requests", "/v1/damage?analytic=send", "", "201", "", "")])

	params := write(t, "params.yaml", "metrics: [{name: sent, instance_name: analyticcounter.instance.istio-system, kind: GAUGE}]\n")
	r = mockmixer(t, "send", "-f", root("deploy", "kubernetes", "adapter.yaml"), "--params", params, "--address", a.GRPCAddr(), "--instances", instances)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.NoError(t, a.Recorded(t).WaitSamples(t.Context(), 2))
	require.Equal(t, 3.0, a.Recorded(t).Series()[mixertest.Key("istio_sent")].Last)

	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"--address", a.GRPCAddr()}, "--instances is required"},
		{[]string{"--address", a.GRPCAddr(), "--instances", instances}, "no adapter_config: name a handler"},
		{[]string{"--instances", instances, "--no-adapter-config"}, "no address"},
		{append(cfg, "--instances", instances, "--handler", "nosuch"), `no handler "nosuch" in the config`},
		{[]string{"--params", params, "--instances", instances}, "--params needs the adapter CR"},
		{[]string{"--no-adapter-config", "--address", "x", "--instances", write(t, "bad.yaml", "instances:\n- value: 1\n")}, "bad.yaml:2: an instance needs a name"},
	}
	for _, tt := range tests {
		r := mockmixer(t, append([]string{"send"}, tt.args...)...)
		require.Equal(t, exitUsage, r.code)
		require.Contains(t, r.stderr, tt.stderr)
	}
}

func TestParseInstances(t *testing.T) {
	insts, err := parseInstances("i.yaml", []byte(`
- name: a.instance.ns
  value: 1.5
  dimensions:
    s: text
    i: 7
    b: true
    d: {duration: 1s}
    ip: {ip_address: 10.0.0.1}
    m: {string_map: {k: v}}
    e: {email_address: a@b.c}
  monitored_resource_type: global
  monitored_resource_dimensions: {zone: {string: "1"}}
`))
	require.NoError(t, err)
	require.Len(t, insts, 1)
	got := insts[0]
	require.Equal(t, "a.instance.ns", got.Name)
	require.Equal(t, 1.5, got.Value.GetDoubleValue())
	byKey := map[string]*policypb.Value{}
	for _, d := range got.Dimensions {
		byKey[d.Key] = d.Value
	}
	require.Equal(t, "text", byKey["s"].GetStringValue())
	require.Equal(t, int64(7), byKey["i"].GetInt64Value())
	require.True(t, byKey["b"].GetBoolValue())
	require.Equal(t, int64(1), byKey["d"].GetDurationValue().GetValue().Seconds)
	require.Equal(t, []byte{10, 0, 0, 1}, byKey["ip"].GetIpAddressValue().GetValue())
	require.Equal(t, map[string]string{"k": "v"}, byKey["m"].GetStringMapValue().GetValue())
	require.Equal(t, "a@b.c", byKey["e"].GetEmailAddressValue().GetValue())
	require.Equal(t, "global", *got.MonitoredResourceType)
	require.Equal(t, []encode.Dim{{Key: "zone", Value: &policypb.Value{Value: &policypb.Value_StringValue{StringValue: "1"}}}}, got.MonitoredResourceDimensions)

	errs := []struct{ doc, want string }{
		{"", "i.yaml: no instances"},
		{"x: 1\n", `i.yaml:1: unknown key "x" (want instances)`},
		{"instances: 5\n", "i.yaml:1: want a list of instances"},
		{"- 5\n", "i.yaml:1: an instance must be a mapping"},
		{"- {name: a, value: {int64: x}}\n", `i.yaml:1: value: strconv.ParseInt: parsing "x": invalid syntax`},
		{"- {name: a, value: {int64: 1, double: 2}}\n", "i.yaml:1: value: state one type: {int64: 200}"},
		{"- {name: a, value: {money: 1}}\n", `i.yaml:1: value: unknown type "money"`},
		{"- {name: a, value: [1]}\n", "i.yaml:1: value: want a scalar or {type: value}"},
		{"- {name: a, colour: red}\n", `i.yaml:1: colour: unknown key "colour"`},
		{"- {name: a, dimensions: {ip: {ip_address: nope}}}\n", `i.yaml:1: dimensions: ip: "nope" is not an IP address`},
	}
	for _, tt := range errs {
		_, err := parseInstances("i.yaml", []byte(tt.doc))
		require.ErrorContains(t, err, tt.want, tt.doc)
	}
}

func TestLoad(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	r := mockmixer(t, "load", "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a), "-c", "3", "-n", "30", "--instances", "5", "--series", "10", "--dimensions", "2", "--output", "json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var s loadgen.Summary
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &s))
	require.Equal(t, int64(30), s.Requests)
	require.Equal(t, int64(150), s.Instances)
	require.Equal(t, 3, s.Settings.Workers)
	require.NoError(t, a.Recorded(t).WaitSamples(t.Context(), 150))
	require.Len(t, a.Recorded(t).Series(), 10)

	r = mockmixer(t, "load", "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a), "-n", "4", "--instances", "1", "--series", "1")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "requests      4 (1 instances of 6 dimensions each, 1 series")
	require.Contains(t, r.stdout, "errors        none")
	require.Contains(t, r.stdout, "adapter       no instance dropped or rejected by the adapter ("+metricsURL(a)+")")

	// The handler of a config gives address and adapter_config.
	r = mockmixer(t, append(append([]string{"load"}, sampleFlags()...), "--handler", "analyticprom-prometheus", "--address", a.GRPCAddr(),
		"--metrics-url", metricsURL(a), "-n", "2", "--instances", "1", "--series", "1", "--instance", "analyticcounter.instance.istio-system", "--output", "json")...)
	require.Equal(t, exitOK, r.code, r.stderr)

	r = mockmixer(t, "load", "--address", "127.0.0.1:1", "-n", "2", "--instances", "1", "--series", "1")
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, "errors        2: Unavailable 2")

	for _, args := range [][]string{{"load"}, {"load", "--address", "x", "--output", "xml"}, {"load", "--address", "x", "--rate", "-1"}} {
		r = mockmixer(t, args...)
		require.Equal(t, exitUsage, r.code, args)
	}
}

func TestUsage(t *testing.T) {
	require.Equal(t, exitUsage, mockmixer(t).code)
	r := mockmixer(t, "help")
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stdout, "mockmixer report [flags]")
	r = mockmixer(t, "frobnicate")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, `unknown command "frobnicate"`)
	for _, cmd := range []string{"report", "send", "load"} {
		r = mockmixer(t, cmd, "-h")
		require.Equal(t, exitOK, r.code)
		require.Contains(t, r.stderr, "Usage: mockmixer "+cmd)
	}
	r = mockmixer(t, "report", "--nosuchflag")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "flag provided but not defined: -nosuchflag")
}
