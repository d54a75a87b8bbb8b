package apiservertest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmetrics/meshmetrics/deploy"
)

// promOperatorVersion is the github.com/prometheus-operator/prometheus-operator
// module whose example/prometheus-operator-crd files define ServiceMonitor,
// PodMonitor and PrometheusRule here (the newest the module proxy serves;
// the Go types the deploy tests decode with are the apis module of go.mod).
const promOperatorVersion = "v0.85.0"

// istioAPIVersion is the istio.io/api module whose
// kubernetes/customresourcedefinitions.gen.yaml defines the Telemetry CRD
// (Istio 1.13+, not part of Istio 1.7's CRDs) for the Mixer-less samples:
// the version of go.mod, whose Go types the deploy tests decode them with.
const istioAPIVersion = "v1.24.2"

const (
	chartDir  = "../helm/meshmetrics"
	namespace = deploy.ReleaseNamespace
)

// moduleDir downloads a module version outside the main module (so that
// any version can be fetched) and returns its directory.
func moduleDir(t *testing.T, path, version string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", path+"@"+version)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	out, err := cmd.Output()
	require.NoError(t, err, "%s", out)
	var mod struct{ Dir, Error string }
	require.NoError(t, json.Unmarshal(out, &mod))
	require.Empty(t, mod.Error)
	return mod.Dir
}

// telemetryCRD is Istio's Telemetry CRD, taken from its release's
// definitions.
func telemetryCRD(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleDir(t, "istio.io/api", istioAPIVersion), "kubernetes", "customresourcedefinitions.gen.yaml"))
	require.NoError(t, err)
	for _, doc := range splitYAML(string(data)) {
		if strings.Contains(doc, "\n  name: telemetries.telemetry.istio.io\n") {
			return doc
		}
	}
	t.Fatal("istio.io/api " + istioAPIVersion + " defines no Telemetry CRD")
	return ""
}

var (
	deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	servicesGVR    = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	handlersGVR    = schema.GroupVersionResource{Group: "config.istio.io", Version: "v1alpha2", Resource: "handlers"}
	adaptersGVR    = schema.GroupVersionResource{Group: "config.istio.io", Version: "v1alpha2", Resource: "adapters"}
)

// crdFiles are the CRDs the manifests need: Istio 1.7.8's (its
// manifests/charts/base/crds, kept in testdata unchanged) and the
// Prometheus Operator's, from its module.
func crdFiles(t *testing.T) []string {
	t.Helper()
	istio, err := filepath.Glob("testdata/istio-1.7.8/*.yaml")
	require.NoError(t, err)
	require.Len(t, istio, 2)
	dir := moduleDir(t, "github.com/prometheus-operator/prometheus-operator", promOperatorVersion)
	files := istio
	for _, kind := range []string{"servicemonitors", "podmonitors", "prometheusrules"} {
		files = append(files, filepath.Join(dir, "example/prometheus-operator-crd/monitoring.coreos.com_"+kind+".yaml"))
	}
	return files
}

// applyText applies every document of text strictly and fails on any
// error or warning.
func (c *cluster) applyText(ctx context.Context, t *testing.T, name, text string, opts applyOptions) []*object {
	t.Helper()
	var objs []*object
	for i, doc := range splitYAML(text) {
		o := c.decode(t, doc)
		_, err := c.apply(ctx, o, opts)
		require.NoError(t, err, "%s#%d (%s %s)", name, i, o.u.GetKind(), o.u.GetName())
		warned := c.warnings.take()
		if opts.tolerate != nil {
			warned = slices.DeleteFunc(warned, opts.tolerate.MatchString)
		}
		require.Empty(t, warned, "%s#%d (%s %s): the API server warned", name, i, o.u.GetKind(), o.u.GetName())
		objs = append(objs, o)
	}
	return objs
}

func (c *cluster) applyFile(ctx context.Context, t *testing.T, path string, opts applyOptions) []*object {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return c.applyText(ctx, t, path, string(data), opts)
}

// release is a Helm release as helm install/upgrade keeps it: the chart
// rendered with lookup reading the live server, each object annotated with
// the release that owns it and applied, and what the previous revision had
// and this one lacks deleted.
type release struct {
	name    string
	objects map[string]*object
}

func key(o *object) string {
	return o.mapping.Resource.String() + "/" + o.u.GetNamespace() + "/" + o.u.GetName()
}

// upgrade installs or upgrades r with values. A render or apply error is
// returned (nothing applied on a render error, as with Helm).
func (c *cluster) upgrade(ctx context.Context, t *testing.T, r *release, values string) error {
	t.Helper()
	text, err := deploy.RenderRelease(deploy.Release{ChartDir: chartDir, Name: r.name, Namespace: namespace, Values: values,
		Caps: c.capabilities(t), Cluster: c.cfg, Upgrade: r.objects != nil})
	if err != nil {
		return err
	}
	next := map[string]*object{}
	for _, tpl := range sortedKeys(text) {
		for i, doc := range splitYAML(text[tpl]) {
			o := c.decode(t, doc)
			ann := o.u.GetAnnotations()
			if ann == nil {
				ann = map[string]string{}
			}
			ann["meta.helm.sh/release-name"] = r.name
			ann["meta.helm.sh/release-namespace"] = namespace
			o.u.SetAnnotations(ann)
			if _, err := c.apply(ctx, o, applyOptions{manager: "helm"}); err != nil {
				return err
			}
			require.Empty(t, c.warnings.take(), "release %s: %s#%d (%s %s): the API server warned", r.name, tpl, i, o.u.GetKind(), o.u.GetName())
			next[key(o)] = o
		}
	}
	for k, o := range r.objects {
		if _, ok := next[k]; !ok {
			require.NoError(t, c.delete(ctx, o))
		}
	}
	r.objects = next
	return nil
}

func (c *cluster) uninstall(ctx context.Context, t *testing.T, r *release) {
	t.Helper()
	for _, o := range r.objects {
		require.NoError(t, c.delete(ctx, o))
	}
	r.objects = nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func replicas(t *testing.T, u *unstructured.Unstructured) int64 {
	t.Helper()
	n, ok, err := unstructured.NestedInt64(u.Object, "spec", "replicas")
	require.NoError(t, err)
	require.True(t, ok)
	return n
}

// TestAgainstAPIServer starts the API server once and runs every check on
// it, in order: the CRDs, the plain manifests and samples, PodSecurity,
// then the chart as releases, installed and upgraded.
func TestAgainstAPIServer(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Each step builds on the ones before: stop at the first that fails.
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("CRDs apply strictly and are served", func(t *testing.T) {
		// Istio 1.7's schemas use formats (string, dateTime, binary) the
		// server does not know and ignores, with a warning.
		for _, f := range crdFiles(t) {
			c.applyFile(ctx, t, f, applyOptions{tolerate: regexp.MustCompile(`^unrecognized format "[a-zA-Z]+"$`)})
		}
		c.applyText(ctx, t, "istio.io/api "+istioAPIVersion+" Telemetry CRD", telemetryCRD(t), applyOptions{})
		ok := eventually(60*time.Second, func() bool {
			c.refreshMapper(t)
			for _, gk := range []schema.GroupKind{{Group: "config.istio.io", Kind: "handler"}, {Group: "config.istio.io", Kind: "adapter"},
				{Group: "config.istio.io", Kind: "template"}, {Group: "config.istio.io", Kind: "instance"}, {Group: "config.istio.io", Kind: "rule"},
				{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}, {Group: "monitoring.coreos.com", Kind: "PodMonitor"},
				{Group: "monitoring.coreos.com", Kind: "PrometheusRule"}, {Group: "telemetry.istio.io", Kind: "Telemetry"}} {
				if _, err := c.mapper.RESTMapping(gk); err != nil {
					return false
				}
			}
			return true
		})
		require.True(t, ok, "the CRDs were not established")
	})

	step("namespace enforces PodSecurity restricted", func(t *testing.T) {
		c.applyText(ctx, t, "namespace", `apiVersion: v1
kind: Namespace
metadata:
  name: `+namespace+`
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/audit: restricted
---
# What kube-controller-manager (not running here) makes in every namespace.
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: `+namespace+`
`, applyOptions{})
		// The check bites: a pod running as root is refused.
		o := c.decode(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: root, namespace: "+namespace+"}\nspec: {containers: [{name: c, image: busybox:1.36}]}\n")
		err := c.create(ctx, o, true)
		require.ErrorContains(t, err, `violates PodSecurity "restricted:latest"`)
		c.warnings.take()
	})

	step("plain manifests and samples", func(t *testing.T) {
		var files []string
		err := filepath.WalkDir("../kubernetes", func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && strings.HasSuffix(p, ".yaml") {
				files = append(files, p)
			}
			return err
		})
		require.NoError(t, err)
		require.NotEmpty(t, files)
		sort.SliceStable(files, func(i, j int) bool { // CRs before the samples that use them
			return !strings.Contains(files[i], "/samples/") && strings.Contains(files[j], "/samples/")
		})
		var applied []*object
		for _, f := range files {
			objs := c.applyFile(ctx, t, f, applyOptions{})
			applied = append(applied, objs...)
			if strings.HasSuffix(f, "-mtls.yaml") {
				// The mutual TLS settings are stored, not pruned.
				for _, o := range objs {
					if o.u.GetKind() != "handler" {
						continue
					}
					h := c.get(ctx, t, handlersGVR, namespace, o.u.GetName())
					mutual, ok, err := unstructured.NestedStringMap(h.Object, "spec", "connection", "authentication", "mutual")
					require.NoError(t, err)
					require.True(t, ok, "%s: handler %s lost its mutual TLS settings", f, o.u.GetName())
					require.Equal(t, "/etc/certs/root-cert.pem", mutual["caCertificates"], "%s: handler %s", f, o.u.GetName())
					require.Equal(t, "/etc/certs/cert-chain.pem", mutual["clientCertificate"])
					require.Equal(t, "/etc/certs/key.pem", mutual["privateKey"])
				}
			}
		}
		for _, o := range applied {
			require.NoError(t, c.delete(ctx, o))
		}
	})

	step("Mixer-less samples: the Telemetry resource", func(t *testing.T) {
		// The other samples of deploy/mixerless are an IstioOperator overlay
		// (its CRD is the Istio operator's), an Envoy bootstrap and Mixer
		// rules; the deploy tests decode them.
		objs := c.applyFile(ctx, t, "../mixerless/telemetry.yaml", applyOptions{})
		require.Len(t, objs, 1)
		tel := c.get(ctx, t, schema.GroupVersionResource{Group: "telemetry.istio.io", Version: "v1alpha1", Resource: "telemetries"}, namespace, "meshmetrics")
		logging, ok, err := unstructured.NestedSlice(tel.Object, "spec", "accessLogging")
		require.NoError(t, err)
		require.True(t, ok)
		require.Len(t, logging, 1)
		require.Equal(t, "SERVER", logging[0].(map[string]any)["match"].(map[string]any)["mode"], "stored as written, not pruned")
		// The CRD's schema checks the providers' shape.
		bad := c.decode(t, "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {name: bad, namespace: "+namespace+"}\nspec: {accessLogging: [{provider: [{name: x}]}]}\n")
		err = c.create(ctx, bad, false)
		require.ErrorContains(t, err, `unknown field "spec.accessLogging[0].provider"`)
		for _, o := range objs {
			require.NoError(t, c.delete(ctx, o))
		}
	})

	step("snake_case mutual TLS fields are refused, or pruned when validation is off", func(t *testing.T) {
		// What the samples used to say, and what Mixer alone accepts.
		data, err := os.ReadFile("../kubernetes/samples/analyticprom-prometheus-mtls.yaml")
		require.NoError(t, err)
		snake := strings.NewReplacer("privateKey:", "private_key:", "clientCertificate:", "client_certificate:", "caCertificates:", "ca_certificates:").Replace(string(data))
		handler := c.decode(t, splitYAML(snake)[0])
		// kubectl apply --validate=strict (client-side apply: a create).
		err = c.create(ctx, handler, false)
		require.ErrorContains(t, err, "strict decoding error")
		for _, f := range []string{"ca_certificates", "client_certificate", "private_key"} {
			require.ErrorContains(t, err, `unknown field "spec.connection.authentication.mutual.`+f+`"`)
		}
		// Server-side apply refuses it whatever the validation.
		_, err = c.apply(ctx, handler, applyOptions{})
		require.Error(t, err)
		require.Regexp(t, `\.spec\.connection\.authentication\.mutual\.(private_key|client_certificate|ca_certificates): field not declared in schema`, err.Error())
		// kubectl apply --validate=false: stored, pruned.
		_, err = c.resource(handler).Create(ctx, handler.u, metav1.CreateOptions{FieldValidation: metav1.FieldValidationIgnore})
		require.NoError(t, err)
		c.warnings.take()
		h := c.get(ctx, t, handlersGVR, namespace, handler.u.GetName())
		mutual, ok, err := unstructured.NestedMap(h.Object, "spec", "connection", "authentication", "mutual")
		require.NoError(t, err)
		require.True(t, ok)
		require.Empty(t, mutual, "a lenient server keeps mutual: {}: mutual TLS silently gone")
		require.NoError(t, c.delete(ctx, handler))
	})

	caps := c.capabilities(t)
	step("the server's capabilities", func(t *testing.T) {
		require.Equal(t, kubernetesVersion, caps.KubeVersion.Version)
		chrt, err := loader.Load(chartDir)
		require.NoError(t, err)
		require.True(t, chartutil.IsCompatibleRange(chrt.Metadata.KubeVersion, caps.KubeVersion.Version))
		for _, v := range []string{"policy/v1", "autoscaling/v2", "networking.k8s.io/v1", "monitoring.coreos.com/v1/PodMonitor"} {
			require.True(t, caps.APIVersions.Has(v), v)
		}
	})

	main := &release{name: deploy.ReleaseName}
	step("install with defaults", func(t *testing.T) {
		require.NoError(t, c.upgrade(ctx, t, main, ""))
		d := c.get(ctx, t, deploymentsGVR, namespace, "meshmetrics")
		require.Equal(t, int64(2), replicas(t, d))
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		_, grpcProbe, _ := unstructured.NestedMap(containers[0].(map[string]any), "livenessProbe", "grpc")
		require.True(t, grpcProbe, "Kubernetes %s has the kubelet's gRPC probe", caps.KubeVersion.Version)
		svc := c.get(ctx, t, servicesGVR, namespace, "meshmetrics")
		ip, _, _ := unstructured.NestedString(svc.Object, "spec", "clusterIP")
		require.Equal(t, "None", ip)
		a := c.get(ctx, t, adaptersGVR, namespace, "meshmetrics")
		require.Equal(t, deploy.ReleaseName, a.GetAnnotations()["meta.helm.sh/release-name"])
	})

	step("pods pass PodSecurity restricted", func(t *testing.T) {
		for _, values := range []string{"", "tls: {enabled: true}", "probes: {grpc: false}", "mixerless: {enabled: true, configMaps: [more-rules]}",
			"extraArgs: ['--spool-dir=/var/spool/meshmetrics']\nextraVolumes: [{name: spool, emptyDir: {sizeLimit: 1Gi}}]\nextraVolumeMounts: [{name: spool, mountPath: /var/spool/meshmetrics}]"} {
			text, err := deploy.RenderRelease(deploy.Release{ChartDir: chartDir, Values: values, Caps: caps})
			require.NoError(t, err)
			d := c.decode(t, text["deployment.yaml"])
			tmpl, _, err := unstructured.NestedMap(d.u.Object, "spec", "template")
			require.NoError(t, err)
			pod := &unstructured.Unstructured{Object: tmpl}
			pod.SetAPIVersion("v1")
			pod.SetKind("Pod")
			pod.SetName("meshmetrics-pod")
			pod.SetNamespace(namespace)
			o := c.decode(t, mustJSON(t, pod.Object))
			require.NoError(t, c.create(ctx, o, true), "values %q", values)
			require.Empty(t, c.warnings.take(), "values %q", values)
		}
	})

	step("upgrades through every option", func(t *testing.T) {
		for _, values := range []string{
			`serviceMonitor: {enabled: true}
podMonitor: {enabled: true}
prometheusRule: {enabled: true}
grafanaDashboard: {enabled: true}
networkPolicy: {enabled: true, metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}], egress: [{ports: [{port: 443, protocol: TCP}]}]}
librato: {secret: {create: true, token: s3cr3t}}
autoscaling: {enabled: true, targetMemoryUtilizationPercentage: 80, behavior: {scaleDown: {stabilizationWindowSeconds: 300}}}
`,
			"tls: {enabled: true}",
			"tls: {enabled: true, mutual: false, secretName: my-cert, certKey: tls.crt, keyKey: tls.key}",
			"probes: {grpc: false}\nscrapeAnnotations: false\nlogFormat: text\nlogLevel: debug",
			"podDisruptionBudget: {minAvailable: '', maxUnavailable: 1}\npriorityClassName: ''\nreplicaCount: 3",
			"podDisruptionBudget: {enabled: false}\nserviceAccount: {create: false}",
			"image: {digest: 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}\nimagePullSecrets: [{name: regcred}]\nextraEnv: [{name: MESHMETRICS_LOG_EVERY, value: 30s}]",
			`mixer:
  config:
  - apiVersion: config.istio.io/v1alpha2
    kind: instance
    metadata: {name: requests}
    spec: {compiledTemplate: metric, params: {value: "1", dimensions: {path: request.path | "/"}}}
  - apiVersion: config.istio.io/v1alpha2
    kind: handler
    metadata: {name: prom}
    spec:
      adapter: meshmetrics
      connection:
        address: meshmetrics.istio-system.svc.cluster.local:50000
        authentication: {mutual: {privateKey: /etc/certs/key.pem, clientCertificate: /etc/certs/cert-chain.pem, caCertificates: /etc/certs/root-cert.pem}}
      params: {metrics: [{name: requests, instanceName: requests.instance.istio-system, kind: COUNTER, labelNames: [path]}]}
  - apiVersion: config.istio.io/v1alpha2
    kind: rule
    metadata: {name: prom}
    spec: {match: "true", actions: [{handler: prom, instances: [requests]}]}
`,
			"mixerless: {enabled: true, analyticSample: true, mixerExact: true, headerAttributes: {x-source-workload: source.workload.name}}\n" +
				"networkPolicy: {enabled: true, accessLogsFrom: [{namespaceSelector: {}}]}\nmixer: {adapter: false, template: false}",
			"mixerless: {enabled: true, standardMetrics: false, config: [{apiVersion: config.istio.io/v1alpha2, kind: rule, metadata: {name: r}, spec: {match: 'true'}}]}",
			"", // back to the defaults: what the options added is removed
		} {
			require.NoError(t, c.upgrade(ctx, t, main, values), "values:\n%s", values)
		}
		kinds := map[string]int{}
		for _, o := range main.objects {
			kinds[o.u.GetKind()]++
		}
		require.Equal(t, map[string]int{"Deployment": 1, "Service": 1, "ServiceAccount": 1, "PodDisruptionBudget": 1, "adapter": 1, "template": 1}, kinds)
	})

	step("turning the HPA on keeps the replicas that run", func(t *testing.T) {
		require.NoError(t, c.upgrade(ctx, t, main, ""))
		// The autoscaler (or a person) scaled the Deployment to 4.
		scale, err := c.dyn.Resource(deploymentsGVR).Namespace(namespace).Get(ctx, "meshmetrics", metav1.GetOptions{}, "scale")
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedField(scale.Object, int64(4), "spec", "replicas"))
		_, err = c.dyn.Resource(deploymentsGVR).Namespace(namespace).Update(ctx, scale, metav1.UpdateOptions{FieldManager: "horizontal-pod-autoscaler"}, "scale")
		require.NoError(t, err)

		require.NoError(t, c.upgrade(ctx, t, main, "autoscaling: {enabled: true}"))
		require.Equal(t, int64(4), replicas(t, c.get(ctx, t, deploymentsGVR, namespace, "meshmetrics")), "the upgrade kept the running count")
		require.NoError(t, c.upgrade(ctx, t, main, "autoscaling: {enabled: true}"))
		require.Equal(t, int64(4), replicas(t, c.get(ctx, t, deploymentsGVR, namespace, "meshmetrics")))

		// What the chart did before: no replicas field under an HPA. Helm
		// 3's three-way merge then sends replicas: null (the previous
		// revision had the field, this one has not), and the server resets
		// the count to its default, 1, below minReplicas, until the HPA
		// acts.
		_, err = c.dyn.Resource(deploymentsGVR).Namespace(namespace).Patch(ctx, "meshmetrics", types.StrategicMergePatchType,
			[]byte(`{"spec":{"replicas":null}}`), metav1.PatchOptions{FieldManager: "helm"})
		require.NoError(t, err)
		require.Equal(t, int64(1), replicas(t, c.get(ctx, t, deploymentsGVR, namespace, "meshmetrics")), "the failure the chart avoids")
		// The chart brings it back to minReplicas at once.
		require.NoError(t, c.upgrade(ctx, t, main, "autoscaling: {enabled: true, minReplicas: 3}"))
		require.Equal(t, int64(3), replicas(t, c.get(ctx, t, deploymentsGVR, namespace, "meshmetrics")))
		// Autoscaling off: replicaCount again.
		require.NoError(t, c.upgrade(ctx, t, main, ""))
		require.Equal(t, int64(2), replicas(t, c.get(ctx, t, deploymentsGVR, namespace, "meshmetrics")))
	})

	step("service.headless cannot flip on an installed release", func(t *testing.T) {
		clusterIP := func() string {
			ip, _, _ := unstructured.NestedString(c.get(ctx, t, servicesGVR, namespace, "meshmetrics").Object, "spec", "clusterIP")
			return ip
		}
		require.Equal(t, "None", clusterIP())
		// What applying the flipped Service does without the chart's
		// guard: accepted, and still headless.
		text, err := deploy.RenderRelease(deploy.Release{ChartDir: chartDir, Values: "service: {headless: false}", Caps: caps})
		require.NoError(t, err)
		_, err = c.apply(ctx, c.decode(t, text["service.yaml"]), applyOptions{manager: "helm"})
		require.NoError(t, err)
		c.warnings.take()
		require.Equal(t, "None", clusterIP(), "the failure the chart avoids: reported done, still headless")

		err = c.upgrade(ctx, t, main, "service: {headless: false}")
		require.ErrorContains(t, err, "service.headless cannot change on an installed release")
		require.ErrorContains(t, err, "kubectl -n istio-system delete service meshmetrics")
		require.Equal(t, "None", clusterIP(), "nothing changed")
		// The documented way: delete the Service, then upgrade.
		for _, o := range main.objects {
			if o.u.GetKind() == "Service" {
				require.NoError(t, c.delete(ctx, o))
			}
		}
		require.NoError(t, c.upgrade(ctx, t, main, "service: {headless: false}"))
		require.NotEqual(t, "None", clusterIP())
		require.NotEmpty(t, clusterIP())

		err = c.upgrade(ctx, t, main, "")
		require.ErrorContains(t, err, "service.headless cannot change on an installed release")
		for _, o := range main.objects {
			if o.u.GetKind() == "Service" {
				require.NoError(t, c.delete(ctx, o))
			}
		}
		require.NoError(t, c.upgrade(ctx, t, main, ""))
		require.Equal(t, "None", clusterIP())
	})

	step("a second release in the namespace", func(t *testing.T) {
		canary := &release{name: "canary"}
		err := c.upgrade(ctx, t, canary, "")
		require.ErrorContains(t, err, "the adapter CR meshmetrics.istio-system already exists and belongs to release istio-system/meshmetrics; "+
			"the template CR metric.istio-system already exists and belongs to release istio-system/meshmetrics")
		require.ErrorContains(t, err, "Install this release with --set mixer.adapter=false --set mixer.template=false")
		err = c.upgrade(ctx, t, canary, "mixer: {adapter: false}")
		require.ErrorContains(t, err, "the template CR metric.istio-system already exists and belongs to release istio-system/meshmetrics")
		require.ErrorContains(t, err, "--set mixer.template=false")

		require.NoError(t, c.upgrade(ctx, t, canary, "mixer: {adapter: false, template: false}"))
		d := c.get(ctx, t, deploymentsGVR, namespace, "canary-meshmetrics")
		require.Equal(t, int64(2), replicas(t, d))
		// The first release still owns its CRs and its workload.
		require.Equal(t, deploy.ReleaseName, c.get(ctx, t, adaptersGVR, namespace, "meshmetrics").GetAnnotations()["meta.helm.sh/release-name"])
		require.Equal(t, int64(2), replicas(t, c.get(ctx, t, deploymentsGVR, namespace, "meshmetrics")))
		// And upgrades of the first keep working next to the second.
		require.NoError(t, c.upgrade(ctx, t, main, "replicaCount: 3"))
		c.uninstall(ctx, t, canary)
		_, err = c.dyn.Resource(deploymentsGVR).Namespace(namespace).Get(ctx, "canary-meshmetrics", metav1.GetOptions{})
		require.Error(t, err)
	})

	step("CRs applied without Helm are not taken over", func(t *testing.T) {
		c.uninstall(ctx, t, main)
		c.applyFile(ctx, t, "../kubernetes/adapter.yaml", applyOptions{})
		fresh := &release{name: deploy.ReleaseName}
		err := c.upgrade(ctx, t, fresh, "")
		require.ErrorContains(t, err, "belongs to release ?/(none: not installed by Helm)")
		require.NoError(t, c.upgrade(ctx, t, fresh, "mixer: {adapter: false}"))
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
