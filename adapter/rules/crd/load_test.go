package crd

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

func keys[T interface{ Key() string }](items []T) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.Key())
	}
	return out
}

func TestLoadValid(t *testing.T) {
	s, err := Load("testdata/valid")
	require.NoError(t, err)

	require.Equal(t, []string{
		"istioproxy.attributemanifest.istio-system",
		"kubernetes.attributemanifest.istio-system",
	}, keys(s.AttributeManifests()))
	require.Equal(t, []string{"metric.template.istio-system"}, keys(s.Templates()))
	require.Equal(t, []string{"meshmetrics.adapter.istio-system"}, keys(s.Adapters()))
	require.Equal(t, []string{
		"h1.handler.istio-system",
		"h2.handler.tenant",
		"prometheus.handler.istio-system",
	}, keys(s.Handlers()), "the Deployment in config.yaml is skipped")
	require.Equal(t, []string{
		"i1metric.instance.istio-system",
		"requestcount.instance.istio-system",
		"tenantsize.instance.tenant",
	}, keys(s.Instances()))
	require.Equal(t, []string{
		"promhttp.rule.istio-system",
		"r1.rule.istio-system",
		"tenantrule.rule.tenant",
	}, keys(s.Rules()))

	a := s.Adapters()[0]
	require.Equal(t, "meshmetrics out-of-process metrics adapter", a.Description)
	require.False(t, a.SessionBased)
	require.Equal(t, []string{"metric"}, a.Templates)
	require.Equal(t, "CgZwYXJhbXM=", a.Config)
	require.Equal(t, "testdata/valid/adapter.yaml:1", a.Source())
	require.Equal(t, "CgZtZXRyaWM=", s.Templates()[0].Descriptor)

	h1 := s.Handlers()[0]
	require.Equal(t, Meta{Kind: KindHandler, Name: "h1", Namespace: "istio-system", File: "testdata/valid/config.yaml", Line: 1}, h1.Meta)
	require.Equal(t, "meshmetrics", h1.Adapter)
	require.False(t, h1.Static())
	require.Equal(t, map[string]any{
		"backend":        "librato",
		"flush_interval": "10m",
		"port":           8080.0,
		"tags":           []any{"a", "b"},
	}, h1.Params, "params numbers are float64, as in a protobuf Struct")
	require.Equal(t, &Connection{
		Address: "meshmetrics:50000",
		Timeout: 5 * time.Second,
		Authentication: &Authentication{TLS: &TLS{
			CACertificates: "/etc/certs/ca.pem",
			TokenPath:      "/var/run/token",
			AuthHeader:     "BEARER",
			ServerName:     "meshmetrics.istio-system.svc",
		}},
	}, h1.Connection)

	h2 := s.Handlers()[1]
	require.Equal(t, "testdata/valid/nested/tenant.yml:3", h2.Source())
	require.Equal(t, map[string]string{"owner": "team-a"}, h2.Annotations)
	require.Equal(t, &Connection{
		Address: "[::]:43639",
		Timeout: 500 * time.Millisecond,
		Authentication: &Authentication{Mutual: &Mutual{
			PrivateKey:        "/etc/certs/key.pem",
			ClientCertificate: "/etc/certs/cert.pem",
			CACertificates:    "/etc/certs/ca.pem",
			ServerName:        "meshmetrics",
		}},
	}, h2.Connection, "lowerCamel keys work like snake_case ones")

	prom := s.Handlers()[2]
	require.True(t, prom.Static())
	require.Equal(t, "prometheus", prom.CompiledAdapter)
	require.Equal(t, 74, prom.Line)

	i1 := s.Instances()[0]
	require.True(t, i1.Dynamic())
	require.Equal(t, "metric", i1.Template)
	require.Equal(t, 23, i1.Line)
	require.Equal(t, &MetricParams{
		Value: "request.size | 0",
		Dimensions: map[string]any{
			"response_code": "response.code | 200",
			"path":          `request.path | "unknown"`,
			"agent":         `request.headers["user-agent"] | "none"`,
			"source":        `"mesh"`,
			"one":           1.0,
			"secure":        true,
		},
		MonitoredResourceType: `"UNSPECIFIED"`,
	}, i1.Params)
	require.Equal(t, "request.size | 0", i1.RawParams["value"])

	rc := s.Instances()[1]
	require.False(t, rc.Dynamic())
	require.Equal(t, "metric", rc.CompiledTemplate)

	tenant := s.Instances()[2]
	require.Equal(t, "metric.istio-system", tenant.Template)
	require.Equal(t, `"UNSPECIFIED"`, tenant.Params.MonitoredResourceType)
	require.Equal(t, map[string]any{"ns": `destination.namespace | "unknown"`}, tenant.Params.MonitoredResourceDimensions)

	r1 := s.Rules()[1]
	require.Equal(t, `match(request.path, "/v1/*") && context.reporter.kind == "inbound"`, r1.Match)
	require.Equal(t, []Action{{Handler: "h1.istio-system", Instances: []string{"i1metric"}, Name: "a1"}}, r1.Actions)

	m, err := s.Manifest()
	require.NoError(t, err)
	require.Equal(t, expr.Int64, m["request.size"])
	require.Equal(t, expr.IPAddress, m["source.ip"], "enum values may be given by number")
	require.Equal(t, expr.Int64, m["response.code"], "value_type works like valueType")
	require.Len(t, m, 11)
	require.Equal(t, "The HTTP URL path including query string", s.AttributeManifests()[0].Attributes["request.path"].Description)
	require.Equal(t, "istio-proxy", s.AttributeManifests()[0].Name)
}

func TestLoadSeveralPaths(t *testing.T) {
	s, err := Load("testdata/valid/template.yaml", "testdata/valid/adapter.yaml")
	require.NoError(t, err)
	require.Equal(t, []string{"metric.template.istio-system"}, keys(s.Templates()))
	require.Equal(t, []string{"meshmetrics.adapter.istio-system"}, keys(s.Adapters()))
	require.Empty(t, s.Rules())
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		path string
		want string
	}{
		{"testdata/errors/bad_yaml.yaml", "testdata/errors/bad_yaml.yaml:15: invalid YAML: mapping values are not allowed in this context"},
		{"testdata/errors/missing_kind.yaml", "testdata/errors/missing_kind.yaml:1: document has no kind"},
		{"testdata/errors/missing_metadata.yaml", "" +
			"testdata/errors/missing_metadata.yaml:4: handler has no metadata.name\n" +
			"testdata/errors/missing_metadata.yaml:11: handler 'h2' has no metadata.namespace (Mixer's fs store requires one)\n" +
			"testdata/errors/missing_metadata.yaml:15: rule has no metadata"},
		{"testdata/errors/unknown_field.yaml", "" +
			`testdata/errors/unknown_field.yaml:7: unknown field "adaptr" in handler spec (known fields: adapter, compiled_adapter, connection, name, params)` + "\n" +
			`testdata/errors/unknown_field.yaml:12: unknown field "tokenpath" in handler spec.connection.authentication.tls (known fields: auth_header, ca_certificates, custom_header, oauth, server_name, token_path)` + "\n" +
			`testdata/errors/unknown_field.yaml:7: handler spec names no adapter (set adapter, or compiledAdapter for a built-in one)`},
		{"testdata/errors/wrong_api_version.yaml", "" +
			`testdata/errors/wrong_api_version.yaml:2: kind rule needs apiVersion config.istio.io/v1alpha2, got "v1"` + "\n" +
			`testdata/errors/wrong_api_version.yaml:8: kind instance needs apiVersion config.istio.io/v1alpha2, got none`},
		{"testdata/errors/bad_values.yaml", "" +
			`testdata/errors/bad_values.yaml:7: adapter spec.description is null: give it a value or remove it (Istio 1.7 rejects nulls with "unknown object type nil")` + "\n" +
			`testdata/errors/bad_values.yaml:8: adapter spec.session_based must be true or false, got a string` + "\n" +
			`testdata/errors/bad_values.yaml:9: field "session_based" in adapter spec is set twice (as "session_based" and "sessionBased")` + "\n" +
			`testdata/errors/bad_values.yaml:10: adapter spec.templates must be a list of strings, got a string` + "\n" +
			`testdata/errors/bad_values.yaml:11: adapter spec.config is not standard base64: illegal base64 data at input byte 3` + "\n" +
			`testdata/errors/bad_values.yaml:20: handler spec.params must be a mapping, got a list` + "\n" +
			`testdata/errors/bad_values.yaml:22: handler spec.connection.address must be a string, got a number (quote it)` + "\n" +
			`testdata/errors/bad_values.yaml:23: handler spec.connection.timeout: bad Duration: time: unknown unit " parsecs" in duration "5 parsecs"`},
		{"testdata/errors/oneofs.yaml", "" +
			`testdata/errors/oneofs.yaml:16: handler spec.connection.authentication.tls.auth_header: unknown value "2" (want one of PLAIN, BEARER)` + "\n" +
			`testdata/errors/oneofs.yaml:11: handler spec.connection.authentication.tls sets both token_path and oauth; they are a oneof` + "\n" +
			`testdata/errors/oneofs.yaml:11: handler spec.connection.authentication.tls sets both auth_header and custom_header; they are a oneof` + "\n" +
			`testdata/errors/oneofs.yaml:10: handler spec.connection.authentication sets both tls and mutual; they are a oneof`},
		{"testdata/errors/bad_specs.yaml", "" +
			`testdata/errors/bad_specs.yaml:9: attributemanifest spec.attributes.a.b.valueType: unknown value "STRNG" (want one of STRING, INT64, DOUBLE, BOOL, TIMESTAMP, IP_ADDRESS, EMAIL_ADDRESS, URI, DNS_NAME, DURATION, STRING_MAP)` + "\n" +
			`testdata/errors/bad_specs.yaml:11: attributemanifest spec.attributes.c.d has no valueType` + "\n" +
			`testdata/errors/bad_specs.yaml:22: unknown field "valu" in instance spec.params (known fields: dimensions, monitored_resource_dimensions, monitored_resource_type, value)` + "\n" +
			`testdata/errors/bad_specs.yaml:23: instance spec.params.value must be a string, number or bool, got a mapping` + "\n" +
			`testdata/errors/bad_specs.yaml:25: instance spec.params.dimensions.d1 must be a string, number or bool, got a list` + "\n" +
			`testdata/errors/bad_specs.yaml:33: instance spec sets both template and compiledTemplate` + "\n" +
			`testdata/errors/bad_specs.yaml:42: handler spec names no adapter (set adapter, or compiledAdapter for a built-in one)` + "\n" +
			`testdata/errors/bad_specs.yaml:49: template spec has no descriptor` + "\n" +
			`testdata/errors/bad_specs.yaml:51: a config document must be a mapping, got a list`},
		{"testdata/errors/duplicate.yaml", "testdata/errors/duplicate.yaml:9: metric.template.istio-system is defined twice: also at testdata/errors/duplicate.yaml:1"},
		{"testdata/valid/notes.txt", "testdata/valid/notes.txt:1: invalid YAML: did not find expected node content"},
		{"testdata/nosuch", "stat testdata/nosuch: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			s, err := Load(tt.path)
			require.Nil(t, s)
			require.EqualError(t, err, tt.want)
		})
	}
}

func TestLoadNullSpec(t *testing.T) {
	s, err := Load("testdata/empty_spec.yaml")
	require.NoError(t, err)
	require.Len(t, s.Rules(), 1)
	r := s.Rules()[0]
	require.Equal(t, "placeholder.rule.staging", r.Key())
	require.Empty(t, r.Match)
	require.Empty(t, r.Actions)
	_, err = s.ResolveRule(r)
	require.EqualError(t, err, "rule 'placeholder.rule.staging' (testdata/empty_spec.yaml:2): No valid actions found in rule")
}

func TestLoadErrorsAreTyped(t *testing.T) {
	_, err := Load("testdata/errors/duplicate.yaml")
	var le *LoadError
	require.ErrorAs(t, err, &le)
	require.Equal(t, LoadError{File: "testdata/errors/duplicate.yaml", Line: 9,
		Msg: "metric.template.istio-system is defined twice: also at testdata/errors/duplicate.yaml:1"}, *le)
}

func TestLoadCountsLinesAcrossDocuments(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/c.yaml"
	doc := "apiVersion: config.istio.io/v1alpha2\nkind: template\nmetadata:\n  name: t%d\n  namespace: ns\nspec:\n  descriptor: CgZtZXRyaWM=\n"
	data := "\n\n" + fmt.Sprintf(doc, 1) + "---\n" + "# comment\n\n" + fmt.Sprintf(doc, 2) + "---\n---\n" + fmt.Sprintf(doc, 3)
	require.NoError(t, os.WriteFile(file, []byte(data), 0o600))
	s, err := Load(file)
	require.NoError(t, err)
	var lines []int
	for _, tmpl := range s.Templates() {
		lines = append(lines, tmpl.Line)
	}
	require.Equal(t, []int{3, 13, 22}, lines)
}

func TestLoadSourcesResolvesAcrossMemoryAndFiles(t *testing.T) {
	manifest := Source{Name: "<memory>", Data: []byte(`apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: extra, namespace: istio-system}
spec: {attributes: {x.y: {valueType: STRING}}}
`)}
	s, err := LoadSources([]Source{manifest}, "testdata/valid")
	require.NoError(t, err)
	m, err := s.Manifest()
	require.NoError(t, err)
	require.Equal(t, expr.String, m["x.y"])
	require.Equal(t, expr.Int64, m["request.size"], "the files' manifests are merged too")

	bad := Source{Name: "<memory>", Data: []byte("apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: [\n")}
	_, err = LoadSources([]Source{bad})
	require.ErrorContains(t, err, "<memory>:")
	var le *LoadError
	require.ErrorAs(t, err, &le)
	require.Equal(t, "<memory>", le.File)
}

// TestLineOfFindsAFieldOfTheSpec: a field named in either spelling, list
// items by index, the deepest field found when the path goes further.
func TestLineOfFindsAFieldOfTheSpec(t *testing.T) {
	s, err := Load("../../../testdata/prometheus/istio-handler.yaml")
	require.NoError(t, err)
	h := s.Handlers()[0]
	require.Equal(t, 5, h.Line)
	tests := []struct {
		path []string
		line int
	}{
		{nil, 5},
		{[]string{"params"}, 14},
		{[]string{"params", "metrics_expiration_policy", "metrics_expiry_duration"}, 16},
		{[]string{"params", "metrics", "0", "kind"}, 20},
		{[]string{"params", "metrics", "0", "labelNames", "2"}, 24},
		{[]string{"params", "metrics", "1", "nosuch"}, 42},
		{[]string{"params", "metrics", "99"}, 17},
	}
	for _, tc := range tests {
		require.Equal(t, tc.line, s.LineOf(&h.Meta, tc.path...), "%v", tc.path)
	}
}

// TestLoadConfigMapVolume reads a directory laid out as a mounted ConfigMap
// (the kubelet's atomic writer): each file once, through its link, not
// again from the "..<timestamp>" directory that holds it.
func TestLoadConfigMapVolume(t *testing.T) {
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2024_01_01_00_00_00.000000001")
	require.NoError(t, os.Mkdir(ts, 0o755))
	data, err := os.ReadFile("testdata/valid/template.yaml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(ts, "template.yaml"), data, 0o644))
	require.NoError(t, os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")))
	require.NoError(t, os.Symlink(filepath.Join("..data", "template.yaml"), filepath.Join(dir, "template.yaml")))

	s, err := Load(dir)
	require.NoError(t, err)
	want, err := Load("testdata/valid/template.yaml")
	require.NoError(t, err)
	require.Len(t, s.Templates(), len(want.Templates()))
	require.NotEmpty(t, s.Templates())
	require.Equal(t, filepath.Join(dir, "template.yaml"), s.Templates()[0].File, "read through the key's link")
	require.True(t, KubernetesInternalDir("..data"))
	require.False(t, KubernetesInternalDir(".hidden"))
}
