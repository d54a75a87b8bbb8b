package attributes

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

func TestEmbeddedCopyMatchesTestdata(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "mixer", "attributes.yaml"))
	require.NoError(t, err)
	require.Equal(t, string(want), string(Istio()), "testdata/mixer/attributes.yaml and istio.yaml must stay identical")
}

func TestStandardManifestsLoadAndTypeTheUsualAttributes(t *testing.T) {
	s, err := crd.LoadSources([]crd.Source{Source()})
	require.NoError(t, err)
	names := []string{}
	for _, m := range s.AttributeManifests() {
		names = append(names, m.Key())
	}
	require.Equal(t, []string{"istioproxy.attributemanifest.istio-system", "kubernetes.attributemanifest.istio-system"}, names)
	m, err := s.Manifest()
	require.NoError(t, err)
	for name, want := range map[string]expr.ValueType{
		"request.path": expr.String, "request.size": expr.Int64, "response.code": expr.Int64,
		"response.duration": expr.Duration, "request.headers": expr.StringMap, "source.ip": expr.IPAddress,
		"request.time": expr.Timestamp, "connection.mtls": expr.Bool, "context.reporter.kind": expr.String,
		"destination.service.name": expr.String, "source.workload.name": expr.String, "request.method": expr.String,
	} {
		require.Equal(t, want, m[name], name)
	}
}

func TestLoadAddsManifestsOnlyWhenTheConfigHasNone(t *testing.T) {
	dir := t.TempDir()
	rule := filepath.Join(dir, "rule.yaml")
	require.NoError(t, os.WriteFile(rule, []byte(`apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: istio-system}
spec: {match: 'request.path == "/"'}
`), 0o600))
	s, err := Load(rule)
	require.NoError(t, err)
	require.Len(t, s.AttributeManifests(), 2)
	require.Len(t, s.Rules(), 1)

	own := filepath.Join(dir, "own.yaml")
	require.NoError(t, os.WriteFile(own, []byte(`apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: mine, namespace: istio-system}
spec: {attributes: {request.path: {valueType: STRING}}}
`), 0o600))
	s, err = Load(dir)
	require.NoError(t, err)
	require.Len(t, s.AttributeManifests(), 1)
	require.Equal(t, "mine", s.AttributeManifests()[0].Meta.Name)

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	require.ErrorContains(t, err, "missing.yaml")
}
