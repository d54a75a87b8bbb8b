package deploy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	alsgrpcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	// The typed configs the Envoy sample names, registered for Any.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// MixerlessDir holds the mesh config, Telemetry and Envoy snippets of the
// Mixer-less mode and the migration rules.
const MixerlessDir = "mixerless"

// protoStrict decodes YAML into a protobuf message as Istio and Envoy read
// their config: by the proto's JSON names, unknown fields refused.
func protoStrict(doc []byte, m proto.Message) error {
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{}.Unmarshal(data, m)
}

// istioOperator is the envelope of the IstioOperator overlays: only
// meshConfig, which MeshConfig decodes.
type istioOperator struct {
	metav1.TypeMeta `json:",inline"`
	Spec            struct {
		MeshConfig map[string]any `json:"meshConfig"`
	} `json:"spec"`
}

func meshConfigOf(t *testing.T, file string) *meshv1alpha1.MeshConfig {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(MixerlessDir, file))
	require.NoError(t, err)
	var op istioOperator
	require.NoError(t, unmarshalStrict(string(data), &op), file)
	require.Equal(t, "install.istio.io/v1alpha1", op.APIVersion)
	require.Equal(t, "IstioOperator", op.Kind)
	doc, err := yaml.Marshal(op.Spec.MeshConfig)
	require.NoError(t, err)
	var mc meshv1alpha1.MeshConfig
	require.NoError(t, protoStrict(doc, &mc), "%s: spec.meshConfig is not Istio's MeshConfig", file)
	return &mc
}

// adapterService is where the plain manifests' Service answers: the
// address every sample must name.
func adapterService(t *testing.T) (string, int) {
	t.Helper()
	objs := loadFiles(t, "kubernetes/service.yaml")
	require.Len(t, objs.services, 1)
	svc := objs.services[0]
	return fmt.Sprintf("%s.%s.svc.cluster.local", svc.Name, svc.Namespace), int(requireServicePort(t, svc, "grpc").Port)
}

func TestMixerlessMeshConfigSamples(t *testing.T) {
	host, port := adapterService(t)

	mc := meshConfigOf(t, "istio-1.7-meshconfig.yaml")
	require.True(t, mc.GetEnableEnvoyAccessLogService())
	require.Equal(t, net.JoinHostPort(host, strconv.Itoa(port)), mc.GetDefaultConfig().GetEnvoyAccessLogService().GetAddress())

	mc = meshConfigOf(t, "istio-extension-provider.yaml")
	providers := map[string]*meshv1alpha1.MeshConfig_ExtensionProvider{}
	for _, p := range mc.GetExtensionProviders() {
		providers[p.GetName()] = p
	}
	require.Len(t, providers, 2)
	h := providers["meshmetrics-http"].GetEnvoyHttpAls()
	require.NotNil(t, h, "meshmetrics-http is an envoyHttpAls provider")
	require.Equal(t, host, h.GetService())
	require.Equal(t, uint32(port), h.GetPort())
	require.Contains(t, h.GetAdditionalRequestHeadersToLog(), "content-type", "context.protocol needs it")
	require.Contains(t, h.GetFilterStateObjectsToLog(), "downstream_peer")
	tcp := providers["meshmetrics-tcp"].GetEnvoyTcpAls()
	require.NotNil(t, tcp, "meshmetrics-tcp is an envoyTcpAls provider")
	require.Equal(t, host, tcp.GetService())
	require.Equal(t, uint32(port), tcp.GetPort())

	// The Telemetry resource names those providers.
	data, err := os.ReadFile(filepath.Join(MixerlessDir, "telemetry.yaml"))
	require.NoError(t, err)
	var env struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              map[string]any `json:"spec"`
	}
	require.NoError(t, unmarshalStrict(string(data), &env))
	require.Equal(t, "telemetry.istio.io/v1alpha1", env.APIVersion)
	require.Equal(t, "Telemetry", env.Kind)
	require.Equal(t, "istio-system", env.Namespace, "the root namespace: mesh-wide")
	spec, err := yaml.Marshal(env.Spec)
	require.NoError(t, err)
	var tel telemetryv1alpha1.Telemetry
	require.NoError(t, protoStrict(spec, &tel))
	require.Len(t, tel.GetAccessLogging(), 1)
	var named []string
	for _, p := range tel.GetAccessLogging()[0].GetProviders() {
		named = append(named, p.GetName())
		require.Contains(t, providers, p.GetName(), "the Telemetry names a provider the mesh config lacks")
	}
	require.ElementsMatch(t, []string{"meshmetrics-http", "meshmetrics-tcp"}, named)
	require.Equal(t, telemetryv1alpha1.WorkloadMode_SERVER, tel.GetAccessLogging()[0].GetMatch().GetMode())

	// The decoding bites: misspelt fields fail as Istio would fail them.
	var bad meshv1alpha1.MeshConfig
	require.ErrorContains(t, protoStrict([]byte("enableEnvoyAccessLogSevice: true\n"), &bad), "enableEnvoyAccessLogSevice")
	require.ErrorContains(t, protoStrict([]byte("extensionProviders: [{name: x, envoyHttpAls: {service: s, port: 1, logname: x}}]\n"), &bad), "logname")
	require.Error(t, protoStrict([]byte("accessLogging: [{match: {mode: INBOUND}}]\n"), &tel))
}

// validateAll runs Envoy's generated validation on m and on every message
// packed in an Any below it, as Envoy validates the typed configs it loads.
func validateAll(m proto.Message, path string) error {
	var errs []error
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	var walk func(r protoreflect.Message, path string)
	walk = func(r protoreflect.Message, path string) {
		r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + "." + string(fd.Name())
			visit := func(msg protoreflect.Message) {
				if a, ok := msg.Interface().(*anypb.Any); ok {
					inner, err := a.UnmarshalNew()
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", p, err))
						return
					}
					errs = append(errs, validateAll(inner, p+"("+a.GetTypeUrl()+")"))
					return
				}
				walk(msg, p)
			}
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					visit(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					visit(mv.Message())
					return true
				})
			case fd.Message() != nil && !fd.IsMap():
				visit(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect(), path)
	return errors.Join(errs...)
}

func TestMixerlessEnvoySample(t *testing.T) {
	host, port := adapterService(t)
	data, err := os.ReadFile(filepath.Join(MixerlessDir, "envoy.yaml"))
	require.NoError(t, err)
	var b bootstrapv3.Bootstrap
	require.NoError(t, protoStrict(data, &b), "envoy.yaml is not an Envoy v3 bootstrap")
	require.NoError(t, validateAll(&b, "bootstrap"))

	clusters := map[string]bool{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = true
		if c.GetName() == "meshmetrics" {
			sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			require.Equal(t, host, sa.GetAddress())
			require.Equal(t, uint32(port), sa.GetPortValue())
			require.Contains(t, c.GetTypedExtensionProtocolOptions(), "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "gRPC needs HTTP/2")
		}
	}
	require.True(t, clusters["meshmetrics"])

	// Each listener logs through the gRPC access logger of its protocol,
	// on v3, to the meshmetrics cluster.
	common := func(c *alsgrpcv3.CommonGrpcAccessLogConfig) {
		require.Equal(t, "meshmetrics", c.GetGrpcService().GetEnvoyGrpc().GetClusterName())
		require.Equal(t, "V3", c.GetTransportApiVersion().String())
	}
	var loggers []string
	for _, l := range b.GetStaticResources().GetListeners() {
		f := l.GetFilterChains()[0].GetFilters()[0]
		cfg, err := f.GetTypedConfig().UnmarshalNew()
		require.NoError(t, err)
		switch c := cfg.(type) {
		case *hcmv3.HttpConnectionManager:
			for _, al := range c.GetAccessLog() {
				loggers = append(loggers, al.GetName())
				var h alsgrpcv3.HttpGrpcAccessLogConfig
				require.NoError(t, al.GetTypedConfig().UnmarshalTo(&h))
				common(h.GetCommonConfig())
				require.Contains(t, h.GetAdditionalRequestHeadersToLog(), "content-type")
			}
			route := c.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster()
			require.True(t, clusters[route])
			require.True(t, strings.HasPrefix(route, "inbound|"), "named as Istio names the server's cluster")
		case *tcpproxyv3.TcpProxy:
			require.True(t, clusters[c.GetCluster()])
			for _, al := range c.GetAccessLog() {
				loggers = append(loggers, al.GetName())
				var tc alsgrpcv3.TcpGrpcAccessLogConfig
				require.NoError(t, al.GetTypedConfig().UnmarshalTo(&tc))
				common(tc.GetCommonConfig())
			}
		default:
			t.Fatalf("listener %s: unexpected filter %T", l.GetName(), cfg)
		}
	}
	require.ElementsMatch(t, []string{"envoy.access_loggers.http_grpc", "envoy.access_loggers.tcp_grpc"}, loggers)

	// The checks bite: a misspelt field, and a rule of a typed config deep
	// in the bootstrap (the TCP logger without its gRPC service).
	require.Error(t, protoStrict([]byte("static_resources: {clusterz: []}\n"), &bootstrapv3.Bootstrap{}))
	broken := strings.Replace(string(data), "                transport_api_version: V3\n                grpc_service:\n                  envoy_grpc: {cluster_name: meshmetrics}\n  clusters:",
		"                transport_api_version: V3\n  clusters:", 1)
	require.NotEqual(t, string(data), broken)
	var bb bootstrapv3.Bootstrap
	require.NoError(t, protoStrict([]byte(broken), &bb))
	require.ErrorContains(t, validateAll(&bb, "bootstrap"), "GrpcService")
}

// TestMigrationRulesKeepThePathsApart runs the migration rules in both
// engines at once, as during a migration: a mock Mixer reports three
// analytic calls, and Envoy logs the same three calls, to one adapter that
// has the same rules in its config directory. Each path counts them once,
// each into its own series; the seed's unguarded rule would have counted
// the access logs into Mixer's series as well.
func TestMigrationRulesKeepThePathsApart(t *testing.T) {
	rules := filepath.Join(MixerlessDir, "migration-rules.yaml")
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{ConfigDir: mixertest.ConfigDir(t, []string{rules})})
	m := mixertest.NewMixer(t, mixertest.MixerOptions{Config: append(mixertest.MeshmetricsCRs(), rules), Address: a.GRPCAddr()})
	bags := make([]expr.MapBag, 3)
	for i := range bags {
		bags[i] = m.Bag(t, map[string]any{"request.path": "/v1/damage?analytic=1", "request.method": "GET", "response.code": 200,
			"destination.service.name": "damage", "source.workload.name": "frontend", "context.reporter.kind": "inbound",
			"context.reporter.uid": "kubernetes://damage-v1-5d8f7c9b6-x2x4q.shop"})
	}
	r := m.Report(bags...).RequireOK(t)
	require.Equal(t, 3, r.Matched())
	require.Len(t, r.Calls, 1, "only the rule for Mixer's Reports fires on them")
	require.Equal(t, "analyticprom-prometheus.handler.istio-system", r.Calls[0].Handler.Key())

	envoy := mixertest.NewEnvoy(t, mixertest.EnvoyOptions{Address: a.GRPCAddr()})
	envoy.RequireSend(t, mixertest.Entries(t, `
- path: /v1/damage?analytic=1
  upstream_cluster: inbound|8080|http|damage.shop.svc.cluster.local
  source_peer: {WORKLOAD_NAME: frontend, NAMESPACE: shop}
  repeat: 3
`)...)
	labels := []string{"/v1/damage?analytic=1", "GET", "200", "damage", "frontend"}
	three := mixertest.Aggregate{Count: 3, Sum: 3, Min: 1, Max: 1, Last: 1}
	require.Equal(t, map[string]mixertest.Aggregate{
		mixertest.Key("istio_analytic_requests", labels...):           three,
		mixertest.Key("istio_analytic_requests_accesslog", labels...): three,
	}, a.Recorded(t).Series())

	// The seed's rule, unguarded, in the same directory: the access logs
	// land in Mixer's series too.
	data, err := os.ReadFile(rules)
	require.NoError(t, err)
	unguarded := strings.Replace(string(data), ` && (context.reporter.uid | "") != "envoy_accesslog_service"`, "", 1)
	require.NotEqual(t, string(data), unguarded)
	b := mixertest.StartAdapter(t, mixertest.AdapterOptions{ConfigDir: mixertest.ConfigDir(t, nil, mixertestSource("rules.yaml", unguarded))})
	mixertest.NewEnvoy(t, mixertest.EnvoyOptions{Address: b.GRPCAddr()}).RequireSend(t, mixertest.Entries(t,
		"- {path: '/v1/damage?analytic=1', upstream_cluster: 'inbound|8080|http|damage.shop.svc.cluster.local', source_peer: {WORKLOAD_NAME: frontend}}\n")...)
	got := b.Recorded(t).Series()
	require.Equal(t, 1, got[mixertest.Key("istio_analytic_requests", labels...)].Count, "counted into Mixer's series: twice, with Mixer's own Report")
	require.Equal(t, 1, got[mixertest.Key("istio_analytic_requests_accesslog", labels...)].Count)
}

func mixertestSource(name, text string) crd.Source { return crd.Source{Name: name, Data: []byte(text)} }
