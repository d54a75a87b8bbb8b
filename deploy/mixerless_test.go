package deploy

import (
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
)

// configMapsOf gives the data of the ConfigMaps in objs, by name.
func configMapsOf(objs *objects) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, o := range objs.all {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			out[cm.Name] = cm.Data
		}
	}
	return out
}

// sumWhere adds up the samples of a family whose labels include want:
// counter values, histogram sample counts.
func sumWhere(f *dto.MetricFamily, want map[string]string) float64 {
	total := 0.0
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		if m.Histogram != nil {
			total += float64(m.GetHistogram().GetSampleCount())
		} else {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// bookinfoTraffic is what two sidecars log for three calls of productpage
// to reviews (each call twice: the client's outbound entry, the server's
// inbound one, with mutual TLS), a kubelet probe of reviews, and two TCP
// connections to MySQL seen by its sidecar.
const bookinfoTraffic = `
entries:
# reviews' sidecar: the server's side.
- &inbound
  path: /v1/damage?analytic=1
  authority: reviews:9080
  code: 200
  duration: 20ms
  request_body_bytes: 100
  response_body_bytes: 2000
  source: 10.1.0.7:45678
  destination: 10.1.2.3:9080
  upstream_cluster: inbound|9080|http|reviews.default.svc.cluster.local
  tls: {sni: outbound_.9080_._.reviews.default.svc.cluster.local, local_san: spiffe://cluster.local/ns/default/sa/bookinfo-reviews,
        peer_san: spiffe://cluster.local/ns/default/sa/bookinfo-productpage}
  source_peer: {WORKLOAD_NAME: productpage-v1, NAMESPACE: default}
  repeat: 3
# productpage's sidecar: the client's side of the same calls.
- path: /v1/damage?analytic=1
  authority: reviews:9080
  code: 200
  duration: 21ms
  source: 10.1.0.7:45678
  destination: 10.96.0.20:9080
  upstream_cluster: outbound|9080||reviews.default.svc.cluster.local
  destination_peer: {WORKLOAD_NAME: reviews-v1, NAMESPACE: default}
  repeat: 3
# The kubelet's probe: not a request of the mesh.
- path: /healthz
  user_agent: kube-probe/1.24
  upstream_cluster: inbound|9080|http|reviews.default.svc.cluster.local
- protocol: tcp
  sent_bytes: 100
  received_bytes: 10
  upstream_cluster: inbound|3306|mysql|mysql.db.svc.cluster.local
- protocol: tcp
  sent_bytes: 200
  received_bytes: 20
  upstream_cluster: inbound|3306|mysql|mysql.db.svc.cluster.local
`

// TestDeploymentServesAccessLogs runs the Mixer-less Deployment of the
// plain manifests (the chart with mixerless.enabled) as the kubelet would,
// with its ConfigMap mounted the kubelet's way, streams a mesh's access
// logs to it as the sidecars would, and checks Istio's standard metrics and
// the analytic counter on /metrics; then changes the ConfigMap and sees the
// adapter apply it without a restart.
func TestDeploymentServesAccessLogs(t *testing.T) {
	bin := buildLikeDockerfile(t)
	objs := loadFiles(t, "kubernetes/mixerless/deployment.yaml", "kubernetes/mixerless/configmap.yaml", "kubernetes/service.yaml")
	require.Len(t, objs.deployments, 1)
	d := objs.deployments[0]
	cms := configMapsOf(objs)
	p := startPod(t, bin, d, nil, cms)
	ct := container(t, d)
	require.Equal(t, http.StatusOK, httpStatus(t, "http://"+p.http+ct.ReadinessProbe.HTTPGet.Path))

	envoy := mixertest.NewEnvoy(t, mixertest.EnvoyOptions{Address: p.grpc, NodeID: "sidecar~10.1.2.3~reviews-v1-abc.default~default.svc.cluster.local"})
	envoy.RequireSend(t, mixertest.Entries(t, bookinfoTraffic)...)

	fams := scrape(t, p.http)
	requests := fams["istio_requests_total"]
	require.NotNil(t, requests)
	server := map[string]string{"reporter": "destination", "source_workload": "productpage-v1", "source_workload_namespace": "default",
		"source_principal": "cluster.local/ns/default/sa/bookinfo-productpage", "destination_principal": "cluster.local/ns/default/sa/bookinfo-reviews",
		"destination_service": "reviews.default.svc.cluster.local", "destination_service_name": "reviews", "destination_service_namespace": "default",
		"destination_workload": "unknown", "request_protocol": "http", "response_code": "200", "response_flags": "-", "grpc_response_status": "",
		"connection_security_policy": "mutual_tls", "source_app": "unknown"}
	client := map[string]string{"reporter": "source", "source_workload": "unknown", "destination_workload": "reviews-v1",
		"destination_workload_namespace": "default", "destination_service": "reviews.default.svc.cluster.local",
		"connection_security_policy": "unknown", "response_code": "200"}
	require.Equal(t, 3.0, sumWhere(requests, server), "each call once on the server's side")
	require.Equal(t, 3.0, sumWhere(requests, client), "and once on the client's")
	require.Equal(t, 6.0, sumWhere(requests, nil), "the probe is not counted")
	require.Len(t, requests.GetMetric(), 2)
	for _, name := range []string{"istio_request_duration_seconds", "istio_request_bytes", "istio_response_bytes"} {
		require.Equal(t, 3.0, sumWhere(fams[name], server), name)
		require.Equal(t, 6.0, sumWhere(fams[name], nil), name)
	}
	for _, m := range fams["istio_request_duration_seconds"].GetMetric() {
		want := map[string]float64{"destination": 3 * 0.020, "source": 3 * 0.021}[labelOf(m, "reporter")]
		require.InDelta(t, want, m.GetHistogram().GetSampleSum(), 1e-9, "in seconds, as Mixer's Prometheus adapter")
	}
	tcp := map[string]string{"reporter": "destination", "destination_service": "mysql.db.svc.cluster.local", "destination_service_name": "mysql"}
	require.Equal(t, 300.0, sumWhere(fams["istio_tcp_sent_bytes_total"], tcp))
	require.Equal(t, 30.0, sumWhere(fams["istio_tcp_received_bytes_total"], tcp))
	analytic := fams["istio_analytic_requests"]
	require.Equal(t, 3.0, sumWhere(analytic, map[string]string{"request_path": "/v1/damage?analytic=1", "destination_service": "reviews",
		"source_workload": "productpage-v1", "request_method": "GET", "response_code": "200"}), "counted once per call: on the server's side")
	require.Equal(t, 3.0, sumWhere(analytic, nil))
	require.Equal(t, 7.0, sumWhere(fams["meshmetrics_accesslog_entries_received_total"], map[string]string{"api": "v3", "protocol": "http"}))

	// The ConfigMap changes (here: the chart's, without the analytic
	// counter): the kubelet swaps the files, the adapter reloads them.
	cm := cms[d.Name+"-mixerless"]
	require.NotNil(t, cm)
	changed := map[string]string{"standard-metrics.yaml": cm["standard-metrics.yaml"]}
	p.publish["mixerless-config"](map[string]map[string]string{d.Name + "-mixerless": changed})
	require.Eventually(t, func() bool {
		return sumWhere(scrape(t, p.http)["meshmetrics_config_reloads_total"], map[string]string{"result": "success"}) == 2
	}, 20*time.Second, 50*time.Millisecond, "the adapter did not reload the changed ConfigMap")
	envoy.RequireSend(t, mixertest.Entries(t, bookinfoTraffic)...)
	fams = scrape(t, p.http)
	require.Equal(t, 6.0, sumWhere(fams["istio_requests_total"], server))
	require.Equal(t, 3.0, sumWhere(fams["istio_analytic_requests"], nil), "the analytic rule is gone")
	require.Equal(t, 0.0, sumWhere(fams["meshmetrics_config_reloads_total"], map[string]string{"result": "failure"}))

	// SIGTERM: open streams end, sinks flush, exit 0 within the grace period.
	grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		p.exited <- err
		require.NoError(t, err)
	case <-time.After(grace):
		t.Fatalf("meshmetrics outlived the %s grace period", grace)
	}
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestChartMixerless renders the chart's Mixer-less option and checks what
// it makes: the flags, the projected config directory, the ConfigMap (whose
// Mixer CRs load strictly), the NetworkPolicy's access-log rule, the notes.
func TestChartMixerless(t *testing.T) {
	off := render(t, "", nil)
	for _, a := range container(t, off.deployment(t)).Args {
		require.NotContains(t, a, "--config-dir", "off by default")
	}
	require.Empty(t, find[corev1.ConfigMap](off))

	r := render(t, `mixerless:
  enabled: true
  analyticSample: true
  configMaps: [team-a-rules, team-b-rules]
  mountPath: /config
  reloadInterval: 5s
  mixerExact: true
  headerAttributes: {x-source-workload: source.workload.name, x-b3-traceid: request.id}
  config:
  - apiVersion: config.istio.io/v1alpha2
    kind: instance
    metadata: {name: tcpconnection}
    spec: {template: metric, params: {value: "1", dimensions: {service: destination.service.host | "unknown"}}}
  - apiVersion: config.istio.io/v1alpha2
    kind: handler
    metadata: {name: connections}
    spec: {adapter: meshmetrics, params: {metrics: [{name: tcp_connections_total, instance_name: tcpconnection.instance.istio-system, kind: COUNTER, label_names: [service]}]}}
  - apiVersion: config.istio.io/v1alpha2
    kind: rule
    metadata: {name: extra}
    spec: {match: context.protocol == "tcp", actions: [{handler: connections, instances: [tcpconnection]}]}
networkPolicy: {enabled: true, accessLogsFrom: [{namespaceSelector: {}}]}
`, nil)
	c := container(t, r.deployment(t))
	for _, want := range []string{"--config-dir=/config", "--config-reload-interval=5s", "--als-mixer-exact=true",
		"--als-header-attributes=x-b3-traceid=request.id,x-source-workload=source.workload.name"} {
		require.Contains(t, c.Args, want)
	}
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == "/config" {
			mount = &c.VolumeMounts[i]
		}
	}
	require.NotNil(t, mount)
	require.True(t, mount.ReadOnly)
	v := volume(t, r.deployment(t), mount.Name)
	require.NotNil(t, v.Projected)
	var sources []string
	for _, s := range v.Projected.Sources {
		require.NotNil(t, s.ConfigMap)
		sources = append(sources, s.ConfigMap.Name)
	}
	require.Equal(t, []string{"meshmetrics-mixerless", "team-a-rules", "team-b-rules"}, sources)

	cms := find[corev1.ConfigMap](r)
	require.Len(t, cms, 1)
	keys := make([]string, 0, len(cms[0].Data))
	for k := range cms[0].Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	require.Equal(t, []string{"analytic.yaml", "config.yaml", "standard-metrics.yaml"}, keys)
	for _, f := range []string{"standard-metrics.yaml", "analytic.yaml"} {
		data, err := os.ReadFile(filepath.Join(ChartDir, "files", "mixerless", f))
		require.NoError(t, err)
		require.Equal(t, string(data), cms[0].Data[f], "%s is the chart's file as it is", f)
	}
	// The adapter loads the directory (strictly: a bad one fails its start)
	// and runs every rule, the user's among them.
	dir := t.TempDir()
	for k, text := range cms[0].Data {
		require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte(text), 0o600))
	}
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{ConfigDir: dir})
	mixertest.NewEnvoy(t, mixertest.EnvoyOptions{Address: a.GRPCAddr()}).RequireSend(t,
		mixertest.Entries(t, "- {protocol: tcp, sent_bytes: 5, upstream_cluster: 'inbound|3306|mysql|mysql.db.svc.cluster.local'}\n")...)
	require.Equal(t, mixertest.Aggregate{Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		a.Recorded(t).Series()[mixertest.Key("istio_tcp_connections_total", "mysql.db.svc.cluster.local")], "the user's rule counts")

	np := find[networkingv1.NetworkPolicy](r)
	require.Len(t, np, 1)
	require.Len(t, np[0].Spec.Ingress, 3, "Mixer, the access logs, /metrics")
	require.Equal(t, "grpc", np[0].Spec.Ingress[1].Ports[0].Port.StrVal)
	require.Len(t, np[0].Spec.Ingress[1].From, 1)
	require.NotNil(t, np[0].Spec.Ingress[1].From[0].NamespaceSelector)

	// Only the user's ConfigMaps: the chart's holds nothing but is still
	// mounted (a projected source must exist).
	r = render(t, "mixerless: {enabled: true, standardMetrics: false, configMaps: [mine]}", nil)
	cms = find[corev1.ConfigMap](r)
	require.Len(t, cms, 1)
	require.Empty(t, cms[0].Data)

	n := notes(t, "mixerless: {enabled: true, configMaps: [mine]}")
	require.Contains(t, n, "ConfigMap meshmetrics-mixerless and mine")
	require.Contains(t, n, "meshConfig.defaultConfig.envoyAccessLogService.address: meshmetrics.istio-system.svc.cluster.local:50000")
	require.Contains(t, n, "envoyHttpAls")
	require.NotContains(t, notes(t, ""), "Mixer-less")
}
