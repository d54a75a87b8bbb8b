package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	policyv1beta1 "k8s.io/api/policy/v1beta1"
	"sigs.k8s.io/yaml"
)

const regenerate = "run `go run ./deploy/render` from the repository root"

func TestPlainManifestsAreTheChartRendered(t *testing.T) {
	want, err := Plain(".")
	require.NoError(t, err)
	for _, dest := range sortedKeys(want) {
		t.Run(dest, func(t *testing.T) {
			have, err := os.ReadFile(filepath.Join(PlainDir, dest))
			require.NoError(t, err, regenerate)
			if slices.Contains(Generated(), dest) {
				// gencr's output, which the chart emits through its link in
				// files/. Compared as bytes: the CR is one long line, too long
				// to diff.
				require.True(t, bytes.Equal(bytes.TrimSpace(have), bytes.TrimSpace(want[dest])), "the chart does not reproduce %s", dest)
				return
			}
			require.Equal(t, string(want[dest]), string(have), "%s differs from the chart's rendering: %s", dest, regenerate)
		})
	}
	// Nothing else: a manifest the chart does not make would drift from it.
	for _, f := range plainFiles(t) {
		rel, err := filepath.Rel(PlainDir, f)
		require.NoError(t, err)
		if strings.HasPrefix(rel, "samples"+string(filepath.Separator)) {
			continue
		}
		require.Contains(t, want, rel, "%s is not rendered from the chart", f)
	}
}

func TestChartReadsTheGeneratedCRsThroughLinks(t *testing.T) {
	for _, name := range Generated() {
		t.Run(name, func(t *testing.T) {
			link := filepath.Join(ChartDir, "files", name)
			target, err := os.Readlink(link)
			require.NoError(t, err, "%s must link to the generated file, or it goes stale after make generate", link)
			resolved := filepath.Join(filepath.Dir(link), target)
			require.Equal(t, filepath.Join(PlainDir, name), filepath.Clean(resolved))
		})
	}
}

func TestEveryPlainManifestDecodesStrictly(t *testing.T) {
	files := plainFiles(t)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			objs := loadFiles(t, f)
			require.NotEmpty(t, objs.all, "%s holds no object", f)
			// Mixer CRs: their specs as strictly as Mixer's jsonpb.
			_, err := objs.mixerStore()
			require.NoError(t, err)
		})
	}
}

// rendered is the chart rendered with some values, decoded.
type rendered struct {
	text map[string]string
	objs *objects
}

func render(t *testing.T, values string, caps *chartutil.Capabilities) *rendered {
	t.Helper()
	text, err := Render(ChartDir, values, caps)
	require.NoError(t, err)
	all := &objects{}
	for _, name := range sortedKeys(text) {
		objs, err := decodeStrict(name, text[name])
		require.NoError(t, err)
		all.add(objs)
	}
	_, err = all.mixerStore()
	require.NoError(t, err)
	return &rendered{text: text, objs: all}
}

func (r *rendered) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	require.Len(t, r.objs.deployments, 1)
	return r.objs.deployments[0]
}

func (r *rendered) service(t *testing.T) *corev1.Service {
	t.Helper()
	require.Len(t, r.objs.services, 1)
	return r.objs.services[0]
}

func find[T any](r *rendered) []*T {
	var out []*T
	for _, o := range r.objs.all {
		if v, ok := o.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

func container(t tb, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	require.Len(t, d.Spec.Template.Spec.Containers, 1)
	return &d.Spec.Template.Spec.Containers[0]
}

// oldCluster is a Kubernetes of Istio 1.4-1.7's era, before policy/v1.
func oldCluster(t *testing.T) *chartutil.Capabilities {
	t.Helper()
	caps := chartutil.DefaultCapabilities.Copy()
	caps.APIVersions = slices.DeleteFunc(slices.Clone(caps.APIVersions), func(v string) bool {
		return v == "policy/v1" || v == "autoscaling/v2"
	})
	kv, err := chartutil.ParseKubeVersion("v1.18.0")
	require.NoError(t, err)
	caps.KubeVersion = *kv
	return caps
}

func TestChartValues(t *testing.T) {
	cases := []struct {
		name   string
		values string
		caps   func(*testing.T) *chartutil.Capabilities
		check  func(t *testing.T, r *rendered)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, r *rendered) {
				d := r.deployment(t)
				require.Equal(t, int32(2), *d.Spec.Replicas)
				require.Equal(t, "ghcr.io/meshmetrics/meshmetrics:0.1.0", container(t, d).Image)
				require.Equal(t, corev1.ClusterIPNone, r.service(t).Spec.ClusterIP)
				require.Len(t, find[policyv1.PodDisruptionBudget](r), 1)
				require.Empty(t, find[autoscalingv2.HorizontalPodAutoscaler](r))
				require.Empty(t, find[monitoringv1.ServiceMonitor](r))
				require.Empty(t, r.objs.secrets, "no Secret unless asked: an upgrade must not replace one made with kubectl")
				require.NotNil(t, container(t, d).LivenessProbe.GRPC)
				require.Len(t, r.objs.mixerSources, 2, "the adapter and the metric template")
			},
		},
		{
			name:   "mutual TLS",
			values: "tls: {enabled: true}",
			check: func(t *testing.T, r *rendered) {
				c := container(t, r.deployment(t))
				require.Contains(t, c.Args, "--tls-client-ca=/etc/meshmetrics/tls/root-cert.pem")
				require.Nil(t, c.LivenessProbe.GRPC, "the kubelet's gRPC probe cannot speak TLS")
				require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
				vol := volume(t, r.deployment(t), "tls")
				require.Equal(t, "istio.istio-mixer-service-account", vol.Secret.SecretName)
				require.Len(t, vol.Secret.Items, 3)
			},
		},
		{
			name:   "server-only TLS",
			values: "tls: {enabled: true, mutual: false, secretName: my-cert, certKey: tls.crt, keyKey: tls.key}",
			check: func(t *testing.T, r *rendered) {
				c := container(t, r.deployment(t))
				require.Contains(t, c.Args, "--tls-cert=/etc/meshmetrics/tls/tls.crt")
				require.Contains(t, c.Args, "--tls-key=/etc/meshmetrics/tls/tls.key")
				for _, a := range c.Args {
					require.NotContains(t, a, "--tls-client-ca")
				}
				vol := volume(t, r.deployment(t), "tls")
				require.Equal(t, "my-cert", vol.Secret.SecretName)
				require.Len(t, vol.Secret.Items, 2)
			},
		},
		{
			name:   "ClusterIP Service",
			values: "service: {headless: false}",
			check: func(t *testing.T, r *rendered) {
				require.Equal(t, corev1.ServiceTypeClusterIP, r.service(t).Spec.Type)
				require.Empty(t, r.service(t).Spec.ClusterIP)
			},
		},
		{
			name:   "autoscaling owns the replica count",
			values: "autoscaling: {enabled: true, minReplicas: 3, maxReplicas: 9, targetMemoryUtilizationPercentage: 80}",
			check: func(t *testing.T, r *rendered) {
				require.Nil(t, r.deployment(t).Spec.Replicas, "a replicas field would fight the autoscaler on every apply")
				hpas := find[autoscalingv2.HorizontalPodAutoscaler](r)
				require.Len(t, hpas, 1)
				require.Equal(t, int32(3), *hpas[0].Spec.MinReplicas)
				require.Equal(t, int32(9), hpas[0].Spec.MaxReplicas)
				require.Equal(t, r.deployment(t).Name, hpas[0].Spec.ScaleTargetRef.Name)
				require.Equal(t, "Deployment", hpas[0].Spec.ScaleTargetRef.Kind)
				require.Len(t, hpas[0].Spec.Metrics, 2)
			},
		},
		{
			name:   "ServiceMonitor",
			values: "serviceMonitor: {enabled: true, labels: {release: prometheus}}",
			check: func(t *testing.T, r *rendered) {
				sms := find[monitoringv1.ServiceMonitor](r)
				require.Len(t, sms, 1)
				sm := sms[0]
				require.Equal(t, "prometheus", sm.Labels["release"])
				require.Equal(t, r.service(t).Labels["app.kubernetes.io/name"], sm.Spec.Selector.MatchLabels["app.kubernetes.io/name"])
				require.Len(t, sm.Spec.Endpoints, 1)
				require.Equal(t, "http-metrics", sm.Spec.Endpoints[0].Port)
				require.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
				requireServicePort(t, r.service(t), "http-metrics")
			},
		},
		{
			name:   "Librato token Secret",
			values: "librato: {secret: {create: true, token: s3cr3t}}",
			check: func(t *testing.T, r *rendered) {
				require.Len(t, r.objs.secrets, 1)
				s := r.objs.secrets[0]
				require.Equal(t, "s3cr3t", s.StringData["token"])
				require.Equal(t, s.Name, volume(t, r.deployment(t), "librato-token").Secret.SecretName)
			},
		},
		{
			// docs/deploy.md's recipe for --spool-dir: the flags are known to
			// the binary (the flag checks of every rendering apply) and the
			// spool sits on its own writable volume.
			name:   "durable spool as docs/deploy.md shows it",
			values: "extraArgs: ['--spool-dir=/var/spool/meshmetrics', '--spool-max-bytes=1073741824']\nextraVolumes: [{name: spool, emptyDir: {sizeLimit: 1Gi}}]\nextraVolumeMounts: [{name: spool, mountPath: /var/spool/meshmetrics}]",
			check: func(t *testing.T, r *rendered) {
				d := r.deployment(t)
				c := container(t, d)
				require.Contains(t, c.Args, "--spool-dir=/var/spool/meshmetrics")
				require.Equal(t, "/var/spool/meshmetrics", c.VolumeMounts[len(c.VolumeMounts)-1].MountPath)
				require.NotNil(t, volume(t, d, "spool").EmptyDir)
				require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem, "the spool needs its volume because the root stays read-only")
			},
		},
		{
			name:   "image by digest, pull secrets, extra args, env and volumes",
			values: "image: {digest: 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}\nimagePullSecrets: [{name: regcred}]\nextraArgs: ['--max-series=500000']\nextraEnv: [{name: MESHMETRICS_LOG_EVERY, value: 30s}]\nextraVolumes: [{name: ca, configMap: {name: ca}}]\nextraVolumeMounts: [{name: ca, mountPath: /etc/ca}]",
			check: func(t *testing.T, r *rendered) {
				d := r.deployment(t)
				c := container(t, d)
				require.Equal(t, "ghcr.io/meshmetrics/meshmetrics@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", c.Image)
				require.Equal(t, "regcred", d.Spec.Template.Spec.ImagePullSecrets[0].Name)
				require.Equal(t, "--max-series=500000", c.Args[len(c.Args)-1])
				require.Equal(t, "MESHMETRICS_LOG_EVERY", c.Env[len(c.Env)-1].Name)
				require.Equal(t, "/etc/ca", c.VolumeMounts[len(c.VolumeMounts)-1].MountPath)
				require.Equal(t, "ca", volume(t, d, "ca").ConfigMap.Name)
			},
		},
		{
			name:   "no gRPC probes (Kubernetes before 1.24)",
			values: "probes: {grpc: false}",
			check: func(t *testing.T, r *rendered) {
				c := container(t, r.deployment(t))
				require.Nil(t, c.LivenessProbe.GRPC)
				require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
			},
		},
		{
			name: "cluster without policy/v1",
			caps: oldCluster,
			check: func(t *testing.T, r *rendered) {
				require.Empty(t, find[policyv1.PodDisruptionBudget](r))
				require.Len(t, find[policyv1beta1.PodDisruptionBudget](r), 1)
			},
		},
		{
			name:   "PDB by maxUnavailable",
			values: "podDisruptionBudget: {minAvailable: '', maxUnavailable: 1}",
			check: func(t *testing.T, r *rendered) {
				pdbs := find[policyv1.PodDisruptionBudget](r)
				require.Len(t, pdbs, 1)
				require.Nil(t, pdbs[0].Spec.MinAvailable)
				require.Equal(t, 1, pdbs[0].Spec.MaxUnavailable.IntValue())
			},
		},
		{
			name:   "no Mixer CRs, another release name",
			values: "mixer: {adapter: false, template: false}\nfullnameOverride: metrics-adapter",
			check: func(t *testing.T, r *rendered) {
				require.Empty(t, r.objs.mixerSources)
				require.Equal(t, "metrics-adapter", r.deployment(t).Name)
				require.Equal(t, "metrics-adapter", r.service(t).Name)
			},
		},
		{
			name: "Mixer config in values, another config namespace",
			values: `mixer:
  namespace: mesh-config
  config:
  - apiVersion: config.istio.io/v1alpha2
    kind: instance
    metadata: {name: requests}
    spec: {template: metric, params: {value: "1"}}
  - apiVersion: config.istio.io/v1alpha2
    kind: handler
    metadata: {name: prom, namespace: istio-system}
    spec: {adapter: meshmetrics.mesh-config, connection: {address: "meshmetrics.istio-system.svc.cluster.local:50000"}}
`,
			check: func(t *testing.T, r *rendered) {
				s, err := r.objs.mixerStore()
				require.NoError(t, err)
				require.Len(t, s.Adapters(), 1)
				require.Equal(t, "meshmetrics.adapter.mesh-config", s.Adapters()[0].Key())
				require.Equal(t, "metric.template.mesh-config", s.Templates()[0].Key())
				require.Equal(t, "requests.instance.mesh-config", s.Instances()[0].Key(), "a missing namespace is mixer.namespace")
				_, err = s.TemplateOf(s.Instances()[0])
				require.NoError(t, err)
				require.Equal(t, "prom.handler.istio-system", s.Handlers()[0].Key())
				a, err := s.AdapterOf(s.Handlers()[0])
				require.NoError(t, err)
				require.Equal(t, "meshmetrics", a.Name)
			},
		},
	}
	flags := readFlags(t, buildLikeDockerfile(t))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var caps *chartutil.Capabilities
			if c.caps != nil {
				caps = c.caps(t)
			}
			r := render(t, c.values, caps)
			// Whatever the values, the workload keeps its invariants.
			checkWorkload(t, flags, r.objs)
			c.check(t, r)
		})
	}
}

func TestChartRefusesUnsafeValues(t *testing.T) {
	cases := []struct {
		name, values, wantErr string
	}{
		{"grace period within the shutdown timeout", "shutdownTimeoutSeconds: 40\nterminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds must exceed shutdownTimeoutSeconds"},
		{"latest tag", "image: {tag: latest}", `image.tag must not be "latest"`},
		{"both PDB bounds", "podDisruptionBudget: {minAvailable: 1, maxUnavailable: 1}", "set minAvailable or maxUnavailable, not both"},
		{"no Librato Secret name", "librato: {secret: {name: ''}}", "librato.secret.name must be set"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Render(ChartDir, c.values, nil)
			require.ErrorContains(t, err, c.wantErr)
		})
	}
	t.Run("HPA on a cluster without autoscaling/v2", func(t *testing.T) {
		_, err := Render(ChartDir, "autoscaling: {enabled: true}", oldCluster(t))
		require.ErrorContains(t, err, "autoscaling.enabled needs autoscaling/v2")
	})
}

func TestChartMetadata(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(ChartDir, "Chart.yaml"))
	require.NoError(t, err)
	var meta struct {
		APIVersion  string   `json:"apiVersion"`
		Name        string   `json:"name"`
		Description string   `json:"description"`
		Type        string   `json:"type"`
		Version     string   `json:"version"`
		AppVersion  string   `json:"appVersion"`
		Keywords    []string `json:"keywords"`
	}
	require.NoError(t, unmarshalStrict(string(data), &meta))
	require.Equal(t, "v2", meta.APIVersion)
	require.Equal(t, "meshmetrics", meta.Name)
	// The default image tag is the appVersion: the two move together.
	d := render(t, "", nil).deployment(t)
	require.True(t, strings.HasSuffix(container(t, d).Image, ":"+meta.AppVersion))
	require.Equal(t, meta.AppVersion, d.Labels["app.kubernetes.io/version"])
}

func TestValuesFileParses(t *testing.T) {
	// values.yaml is documentation too: it must stay valid YAML with the
	// sections the templates read.
	data, err := os.ReadFile(filepath.Join(ChartDir, "values.yaml"))
	require.NoError(t, err)
	var vals map[string]any
	require.NoError(t, yaml.Unmarshal(data, &vals))
	for _, key := range []string{"replicaCount", "image", "resources", "tls", "service", "librato", "podDisruptionBudget", "autoscaling", "serviceMonitor", "extraArgs", "extraEnv", "mixer"} {
		require.Contains(t, vals, key)
	}
}
