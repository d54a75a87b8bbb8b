package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	policyv1beta1 "k8s.io/api/policy/v1beta1"
	"sigs.k8s.io/yaml"
)

// allOptions turns on every optional template at once.
const allOptions = `serviceMonitor: {enabled: true}
podMonitor: {enabled: true}
prometheusRule: {enabled: true}
grafanaDashboard: {enabled: true}
networkPolicy: {enabled: true, egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}], ports: [{port: 443, protocol: TCP}]}]}
autoscaling: {enabled: true}
librato: {secret: {create: true}}
`

// allOptionsMixerless adds the Mixer-less mode to every other option.
const allOptionsMixerless = allOptions + "mixerless: {enabled: true, analyticSample: true, headerAttributes: {x-user: request.auth.principal}}\n"

func TestChartSchemaRefusesBadValues(t *testing.T) {
	cases := []struct{ name, values, wantErr string }{
		{"wrong type", "replicaCount: two", "replicaCount"},
		{"bad enum", "logFormat: xml", "logFormat"},
		{"unknown key", "serviceMonitr: {enabled: true}", "serviceMonitr"},
		{"unknown nested key", "tls: {enable: true}", "enable"},
		{"bool as string", "tls: {enabled: 'yes'}", "enabled"},
		{"pull policy", "image: {pullPolicy: Sometimes}", "pullPolicy"},
		{"digest", "image: {digest: 'sha256:abc'}", "digest"},
		{"port range", "grpcPort: 70000", "grpcPort"},
		{"flag form", "extraArgs: ['--max-series', '500000']", "extraArgs"},
		{"log level", "logLevel: verbose", "logLevel"},
		{"duration", "maxConnectionAge: 60", "maxConnectionAge"},
		{"Mixer config kind", "mixer: {config: [{apiVersion: apps/v1, kind: Deployment}]}", "config"},
		{"Mixer-less unknown key", "mixerless: {enable: true}", "enable"},
		{"Mixer-less config kind", "mixerless: {config: [{apiVersion: v1, kind: ConfigMap}]}", "config"},
		{"Mixer-less ConfigMap name", "mixerless: {configMaps: [My_Rules]}", "configMaps"},
		{"Mixer-less mount path", "mixerless: {mountPath: config}", "mountPath"},
		{"Mixer-less reload interval", "mixerless: {reloadInterval: 2}", "reloadInterval"},
		{"Mixer-less header attribute", "mixerless: {headerAttributes: {x-user: User}}", "headerAttributes"},
		{"Mixer-less header name", "mixerless: {headerAttributes: {'x user': request.id}}", "x user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Render(ChartDir, c.values, PlainCapabilities())
			require.ErrorContains(t, err, "values don't meet the specifications of the schema")
			require.ErrorContains(t, err, c.wantErr)
		})
	}
	t.Run("every option at once passes", func(t *testing.T) {
		_, err := Render(ChartDir, allOptionsMixerless, PlainCapabilities())
		require.NoError(t, err)
	})
}

func TestChartSchemaCoversValues(t *testing.T) {
	// Each key of values.yaml is in the schema and each property of the
	// schema is in values.yaml (documented there), so neither drifts.
	var schema map[string]any
	data, err := os.ReadFile(filepath.Join(ChartDir, "values.schema.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &schema))
	var vals map[string]any
	data, err = os.ReadFile(filepath.Join(ChartDir, "values.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(data, &vals))
	var walk func(path string, s map[string]any, v map[string]any)
	walk = func(path string, s map[string]any, v map[string]any) {
		props, _ := s["properties"].(map[string]any)
		if s["additionalProperties"] != false {
			return // a free-form map (labels, resources, affinity)
		}
		for k, sub := range v {
			p, ok := props[k].(map[string]any)
			require.True(t, ok, "values.yaml has %s%s, which the schema lacks", path, k)
			if m, ok := sub.(map[string]any); ok {
				walk(path+k+".", p, m)
			}
		}
		for k := range props {
			if path == "" && k == "global" {
				continue
			}
			_, ok := v[k]
			require.True(t, ok, "the schema has %s%s, which values.yaml does not document", path, k)
		}
	}
	walk("", schema, vals)
}

// capsAt is Helm's default API list at a Kubernetes version, as
// `helm template --kube-version` gives.
func capsAt(t *testing.T, version string, drop ...string) *chartutil.Capabilities {
	t.Helper()
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(version)
	require.NoError(t, err)
	caps.KubeVersion = *kv
	caps.APIVersions = slices.DeleteFunc(slices.Clone(caps.APIVersions), func(v string) bool { return slices.Contains(drop, v) })
	return caps
}

func TestChartFollowsTheKubernetesVersion(t *testing.T) {
	cases := []struct {
		name      string
		caps      func(*testing.T) *chartutil.Capabilities
		policyV1  bool
		grpcProbe bool
		hpa       bool
	}{
		{"--kube-version 1.18 (Istio 1.7's era)", func(t *testing.T) *chartutil.Capabilities { return capsAt(t, "v1.18.20") }, false, false, false},
		{"--kube-version 1.20", func(t *testing.T) *chartutil.Capabilities { return capsAt(t, "v1.20.0") }, false, false, false},
		{"1.21: policy/v1", func(t *testing.T) *chartutil.Capabilities { return capsAt(t, "v1.21.0") }, true, false, false},
		{"1.23: autoscaling/v2", func(t *testing.T) *chartutil.Capabilities { return capsAt(t, "v1.23.4") }, true, false, true},
		{"1.24: the kubelet's gRPC probe", func(t *testing.T) *chartutil.Capabilities { return capsAt(t, "v1.24.0") }, true, true, true},
		{"1.37", func(t *testing.T) *chartutil.Capabilities { return capsAt(t, "v1.37.2") }, true, true, true},
		{"a cluster that lists no policy/v1", func(t *testing.T) *chartutil.Capabilities {
			return capsAt(t, "v1.30.0", "policy/v1", "autoscaling/v2")
		}, false, true, false},
		{"an EKS-style version", func(t *testing.T) *chartutil.Capabilities { return capsAt(t, "v1.24.17-eks-4f4795d") }, true, true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := render(t, "", c.caps(t))
			if c.policyV1 {
				require.Len(t, find[policyv1.PodDisruptionBudget](r), 1)
			} else {
				require.Len(t, find[policyv1beta1.PodDisruptionBudget](r), 1)
			}
			probe := container(t, r.deployment(t)).LivenessProbe
			if c.grpcProbe {
				require.NotNil(t, probe.GRPC)
			} else {
				require.Nil(t, probe.GRPC, "the kubelet's gRPC probe needs Kubernetes 1.24")
				require.Equal(t, "/healthz", probe.HTTPGet.Path)
			}
			_, err := Render(ChartDir, "autoscaling: {enabled: true}", c.caps(t))
			if c.hpa {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, "autoscaling.enabled needs autoscaling/v2")
			}
		})
	}
}

func TestChartKubeVersionRange(t *testing.T) {
	chrt, err := loader.Load(ChartDir)
	require.NoError(t, err)
	for v, ok := range map[string]bool{"v1.15.12": false, "v1.16.0": true, "v1.18.20": true, "v1.24.17-eks-4f4795d": true, "v1.37.2": true} {
		require.Equal(t, ok, chartutil.IsCompatibleRange(chrt.Metadata.KubeVersion, v), "kubeVersion %s on %s", chrt.Metadata.KubeVersion, v)
	}
}

// objectMeta decodes the metadata of every rendered document.
func objectMetas(t *testing.T, text map[string]string) map[string]metaOnly {
	t.Helper()
	out := map[string]metaOnly{}
	for name, doc := range text {
		for i, d := range splitDocs(doc) {
			var m metaOnly
			require.NoError(t, yaml.Unmarshal([]byte(d), &m))
			out[name+"#"+string(rune('0'+i))] = m
		}
	}
	return out
}

type metaOnly struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
}

func TestChartLabelsEveryObject(t *testing.T) {
	chrt, err := loader.Load(ChartDir)
	require.NoError(t, err)
	text, err := Render(ChartDir, allOptionsMixerless, PlainCapabilities())
	require.NoError(t, err)
	metas := objectMetas(t, text)
	require.Len(t, metas, 14)
	for doc, m := range metas {
		if m.Kind == "adapter" || m.Kind == "template" {
			continue // gencr's CRs, emitted as generated
		}
		l := m.Metadata.Labels
		require.Equal(t, "meshmetrics-"+chrt.Metadata.Version, l["helm.sh/chart"], doc)
		require.Equal(t, "Helm", l["app.kubernetes.io/managed-by"], doc)
		require.Equal(t, "meshmetrics", l["app.kubernetes.io/name"], doc)
		require.Equal(t, ReleaseName, l["app.kubernetes.io/instance"], doc)
		require.Equal(t, chrt.Metadata.AppVersion, l["app.kubernetes.io/version"], doc)
	}
	// The pod template carries them too, but the selector only the stable
	// ones: a selector cannot change after install.
	d := render(t, "", nil).deployment(t)
	require.Equal(t, "Helm", d.Spec.Template.Labels["app.kubernetes.io/managed-by"])
	require.Len(t, d.Spec.Selector.MatchLabels, 2)
}

// notes renders the chart's NOTES.txt.
func notes(t *testing.T, values string) string {
	t.Helper()
	chrt, err := loader.Load(ChartDir)
	require.NoError(t, err)
	overlay, err := chartutil.ReadValues([]byte(values))
	require.NoError(t, err)
	vals, err := chartutil.ToRenderValues(chrt, overlay, chartutil.ReleaseOptions{Name: ReleaseName, Namespace: ReleaseNamespace, IsInstall: true}, PlainCapabilities())
	require.NoError(t, err)
	out, err := engine.Engine{Strict: true}.Render(chrt, vals)
	require.NoError(t, err)
	n, ok := out["meshmetrics/templates/NOTES.txt"]
	require.True(t, ok, "the chart has no NOTES.txt")
	return n
}

func TestChartNotes(t *testing.T) {
	n := notes(t, "")
	require.Contains(t, n, "meshmetrics.istio-system.svc.cluster.local:50000", "where Mixer's handlers dial")
	require.Contains(t, n, "kubectl -n istio-system port-forward deploy/meshmetrics 42422")
	require.Contains(t, n, "curl -s localhost:42422/metrics")
	require.Contains(t, n, "meshmetrics_instances_dropped_total")
	require.Contains(t, n, "rollout status deploy/meshmetrics")
	require.Contains(t, n, "prometheus.io/scrape annotations")
	require.NotContains(t, n, "<no value>")

	n = notes(t, "serviceMonitor: {enabled: true}\nprometheusRule: {enabled: true}\ngrafanaDashboard: {enabled: true}\ntls: {enabled: true}\nmixer: {adapter: false}")
	require.Contains(t, n, "A ServiceMonitor (meshmetrics)")
	require.Contains(t, n, "PrometheusRule meshmetrics")
	require.Contains(t, n, "ConfigMap meshmetrics-dashboard")
	require.Contains(t, n, "with mutual TLS")
	require.Contains(t, n, "mixer.adapter=false")

	n = notes(t, "scrapeAnnotations: false")
	require.Contains(t, n, "Nothing tells Prometheus to scrape them")
}

func TestChartMonitoringOptions(t *testing.T) {
	r := render(t, allOptions, nil)
	d := r.deployment(t)
	c := container(t, d)

	pms := find[monitoringv1.PodMonitor](r)
	require.Len(t, pms, 1)
	pm := pms[0]
	require.True(t, selects(pm.Spec.Selector.MatchLabels, d.Spec.Template.Labels), "the PodMonitor selects the adapter's pods")
	require.Equal(t, []string{d.Namespace}, pm.Spec.NamespaceSelector.MatchNames)
	require.Len(t, pm.Spec.PodMetricsEndpoints, 1)
	require.Equal(t, httpPortOf(t, c), portNamed(t, c, *pm.Spec.PodMetricsEndpoints[0].Port))
	require.Equal(t, "/metrics", pm.Spec.PodMetricsEndpoints[0].Path)

	// The PrometheusRule carries the rule file's groups, unchanged.
	prs := find[monitoringv1.PrometheusRule](r)
	require.Len(t, prs, 1)
	var file monitoringv1.PrometheusRuleSpec
	data, err := os.ReadFile(filepath.Join(ChartDir, "files/meshmetrics.rules.yaml"))
	require.NoError(t, err)
	require.NoError(t, unmarshalStrict(string(data), &file))
	require.NotEmpty(t, file.Groups)
	require.Equal(t, file, prs[0].Spec)

	// The dashboard ConfigMap holds the JSON for Grafana's sidecar.
	cms := find[corev1.ConfigMap](r)
	require.Len(t, cms, 1)
	require.Equal(t, "1", cms[0].Labels["grafana_dashboard"])
	dash, err := os.ReadFile(filepath.Join(ChartDir, "files/meshmetrics.json"))
	require.NoError(t, err)
	require.JSONEq(t, string(dash), cms[0].Data["meshmetrics.json"])

	// The NetworkPolicy lets Mixer reach gRPC and anyone /metrics, on the
	// ports the container has.
	nps := find[networkingv1.NetworkPolicy](r)
	require.Len(t, nps, 1)
	np := nps[0]
	require.True(t, selects(np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels))
	require.Len(t, np.Spec.Ingress, 2)
	grpc := np.Spec.Ingress[0]
	require.Equal(t, "grpc", grpc.Ports[0].Port.StrVal)
	portNamed(t, c, grpc.Ports[0].Port.StrVal)
	require.Equal(t, map[string]string{"kubernetes.io/metadata.name": "istio-system"}, grpc.From[0].NamespaceSelector.MatchLabels)
	require.Equal(t, map[string]string{"istio": "mixer", "istio-mixer-type": "telemetry"}, grpc.From[0].PodSelector.MatchLabels)
	metrics := np.Spec.Ingress[1]
	require.Equal(t, "http-metrics", metrics.Ports[0].Port.StrVal)
	require.Empty(t, metrics.From, "anyone may scrape unless metricsFrom says otherwise")
	require.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, np.Spec.PolicyTypes)
	require.Len(t, np.Spec.Egress, 2, "DNS and the rule given")
	require.Equal(t, int32(53), np.Spec.Egress[0].Ports[0].Port.IntVal)

	// Without egress rules, egress stays open: push sinks reach backends
	// outside the cluster.
	r = render(t, "networkPolicy: {enabled: true, metricsFrom: [{namespaceSelector: {matchLabels: {team: monitoring}}}]}", nil)
	np = find[networkingv1.NetworkPolicy](r)[0]
	require.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, np.Spec.PolicyTypes)
	require.Equal(t, "monitoring", np.Spec.Ingress[1].From[0].NamespaceSelector.MatchLabels["team"])
}

func httpPortOf(t *testing.T, c *corev1.Container) int32 {
	t.Helper()
	return portNamed(t, c, "http-metrics")
}

func TestDashboardJSON(t *testing.T) {
	// The dashboard imports into Grafana: unique panel ids, a Prometheus
	// datasource variable every target uses, an expression per target.
	// The expressions themselves run against a real Prometheus in
	// deploy/monitoring.
	data, err := os.ReadFile(filepath.Join(ChartDir, "files/meshmetrics.json"))
	require.NoError(t, err)
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name, Type string
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	require.Equal(t, "meshmetrics", dash.UID)
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Type+":"+v.Name)
	}
	require.Contains(t, vars, "datasource:datasource")
	ids := map[int]bool{}
	targets := 0
	for _, p := range dash.Panels {
		require.False(t, ids[p.ID], "panel id %d twice", p.ID)
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		require.NotNil(t, p.Datasource, p.Title)
		require.Equal(t, "${datasource}", p.Datasource.UID, p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			require.True(t, strings.Contains(tg.Expr, "meshmetrics_") || strings.Contains(tg.Expr, "process_") || strings.Contains(tg.Expr, "up{"), "%s: %s", p.Title, tg.Expr)
			targets++
		}
	}
	require.GreaterOrEqual(t, targets, 20)
}

func TestHelmLint(t *testing.T) {
	// What `helm lint` (run by the release workflow) says, with the default
	// values and with every option on, for the plain manifests' Kubernetes.
	kv, err := chartutil.ParseKubeVersion(PlainKubeVersion)
	require.NoError(t, err)
	for _, values := range []string{"", allOptions} {
		vals, err := chartutil.ReadValues([]byte(values))
		require.NoError(t, err)
		l := lint.AllWithKubeVersion(ChartDir, vals, ReleaseNamespace, kv)
		var msgs []string
		for _, m := range l.Messages {
			if m.Severity > support.InfoSev {
				msgs = append(msgs, m.Error())
			}
		}
		require.Empty(t, msgs, "values %q", values)
	}
}
