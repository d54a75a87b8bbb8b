package deploy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
	"github.com/meshmetrics/meshmetrics/adapter/rules/dispatch"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// podName is what the downward API gives MESHMETRICS_REPLICA in the run test.
const podName = "meshmetrics-5d8f7c9b6-x2x4q"

// pod is a meshmetrics process started the way the kubelet would start the
// Deployment's container: its args and env, its Secret volumes as
// directories, listening on loopback.
type pod struct {
	cmd        *exec.Cmd
	grpc, http string
	serving    map[string]any // the "meshmetrics serving" log line
	exited     chan error
	// secretDirs are the directories the Secret volumes became, by Secret
	// name.
	secretDirs map[string]string
	// publish replaces the content of a projected ConfigMap volume (by
	// volume name) as the kubelet does when a ConfigMap changes.
	publish map[string]func(configMaps map[string]map[string]string)
}

// fakeSecrets are the Secrets the run test provides: Istio's Secret for
// Mixer's service account (one certificate with Mixer's SPIFFE URI SAN, for
// client and server use, as Istio's CA issues them) and a Librato token.
func fakeSecrets(t *testing.T) map[string]map[string][]byte {
	t.Helper()
	ca := tlstest.NewCA(t, "istio-ca")
	leaf := ca.Issue(t, "mixer", tlstest.LeafOptions{CommonName: "istio-mixer", URIs: []string{tlstest.MixerSPIFFE}, Client: true, Server: true})
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		return b
	}
	return map[string]map[string][]byte{
		"istio.istio-mixer-service-account": {
			"cert-chain.pem": read(leaf.CertFile),
			"key.pem":        read(leaf.KeyFile),
			"root-cert.pem":  ca.CertPEM,
		},
		"librato-token": {"token": []byte("test-token\n")},
	}
}

// atomicWriter lays out files in dir as the kubelet's atomic writer does in
// a ConfigMap, Secret or projected volume
// (k8s.io/kubernetes/pkg/volume/util/atomic_writer.go): the files in a
// "..<timestamp>" directory, "..data" linked to it, each file a link to
// "..data/<name>". Each call publishes new content the same way: a new
// directory, "..data" swapped by a rename, links for new names, the old
// directory removed.
func atomicWriter(t *testing.T, dir string) func(files map[string]string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	n, old := 0, ""
	return func(files map[string]string) {
		n++
		ts := fmt.Sprintf("..2024_05_01_10_00_%02d.%09d", n, n)
		require.NoError(t, os.Mkdir(filepath.Join(dir, ts), 0o755))
		for name, content := range files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, ts, name), []byte(content), 0o644))
			if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
				require.NoError(t, os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)))
			}
		}
		require.NoError(t, os.Symlink(ts, filepath.Join(dir, "..data_tmp")))
		require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		if old != "" {
			require.NoError(t, os.RemoveAll(filepath.Join(dir, old)))
		}
		old = ts
	}
}

// startPod runs bin as d's container would run. secrets and configMaps
// give the content of its Secret and projected ConfigMap volumes, by name.
func startPod(t *testing.T, bin string, d *appsv1.Deployment, secrets map[string]map[string][]byte, configMaps map[string]map[string]string) *pod {
	t.Helper()
	c := container(t, d)
	root := t.TempDir()
	p := &pod{secretDirs: map[string]string{}, exited: make(chan error, 1), publish: map[string]func(map[string]map[string]string){}}

	// Secret and ConfigMap volumes become directories; paths under a mount
	// point are rewritten to them.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		v := volume(t, d, m.Name)
		dir := filepath.Join(root, m.Name)
		if v.Projected != nil {
			// A projected volume of ConfigMaps, kept up to date by the
			// kubelet through its atomic writer.
			write := atomicWriter(t, dir)
			publish := func(cms map[string]map[string]string) {
				files := map[string]string{}
				for _, src := range v.Projected.Sources {
					require.NotNil(t, src.ConfigMap, "volume %s: the run test knows only ConfigMap sources", m.Name)
					data, ok := cms[src.ConfigMap.Name]
					require.True(t, ok || (src.ConfigMap.Optional != nil && *src.ConfigMap.Optional),
						"ConfigMap %s is required but the test has none: the pod would not start", src.ConfigMap.Name)
					for key, content := range data {
						_, dup := files[key]
						require.False(t, dup, "key %s comes from two ConfigMaps of volume %s", key, m.Name)
						files[key] = content
					}
				}
				write(files)
			}
			publish(configMaps)
			p.publish[m.Name] = publish
			mounts[strings.TrimSuffix(m.MountPath, "/")+"/"] = dir + "/"
			continue
		}
		require.NotNil(t, v.Secret, "volume %s: the run test knows only Secret and projected ConfigMap volumes", m.Name)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		data, ok := secrets[v.Secret.SecretName]
		if !ok {
			require.True(t, v.Secret.Optional != nil && *v.Secret.Optional, "Secret %s is required but the test has none", v.Secret.SecretName)
		}
		for key, content := range data {
			dest := key
			if len(v.Secret.Items) > 0 {
				dest = ""
				for _, it := range v.Secret.Items {
					if it.Key == key {
						dest = it.Path
					}
				}
				if dest == "" {
					continue
				}
			}
			require.NoError(t, os.WriteFile(filepath.Join(dir, dest), content, 0o600))
		}
		mounts[strings.TrimSuffix(m.MountPath, "/")+"/"] = dir + "/"
		p.secretDirs[v.Secret.SecretName] = dir
	}
	rewrite := func(s string) string {
		for from, to := range mounts {
			s = strings.ReplaceAll(s, from, to)
		}
		return s
	}

	args := make([]string, 0, len(c.Args)+2)
	for _, a := range c.Args {
		if flag, value, ok := strings.Cut(a, "="); ok {
			if to, ok := mounts[strings.TrimSuffix(value, "/")+"/"]; ok {
				a = flag + "=" + strings.TrimSuffix(to, "/") // a mount point itself
			}
		}
		args = append(args, rewrite(a))
	}
	// Loopback and free ports, so tests can run side by side; the ports
	// themselves are checked against the manifests elsewhere.
	args = append(args, "--grpc-address=127.0.0.1:0", "--http-address=127.0.0.1:0")
	// Only the container's environment: nothing from the test's.
	env := []string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env = append(env, e.Name+"="+podName)
		case e.ValueFrom != nil:
			t.Fatalf("env %s: the run test does not know this source", e.Name)
		default:
			env = append(env, e.Name+"="+rewrite(e.Value))
		}
	}

	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if err := <-p.exited; err == nil {
			t.Log("the adapter had already exited cleanly")
		}
	})

	serving := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "meshmetrics serving" {
				serving <- line
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	select {
	case p.serving = <-serving:
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("meshmetrics exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("meshmetrics did not log \"meshmetrics serving\" in JSON within 30s")
	}
	p.grpc, _ = p.serving["grpc"].(string)
	p.http, _ = p.serving["http"].(string)
	require.NotEmpty(t, p.grpc)
	require.NotEmpty(t, p.http)
	return p
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func healthCheck(ctx context.Context, addr string, creds credentials.TransportCredentials) (healthpb.HealthCheckResponse_ServingStatus, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return 0, err
	}
	return r.Status, nil
}

// scrape returns the metric families on /metrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// TestDeploymentServesMixer runs each Deployment's container as the kubelet
// would, probes it as the kubelet would, sends it the sample config's
// instances as Mixer would (with mutual TLS and Mixer's SAN check where the
// handler asks for it), reads the series on /metrics, and stops it with
// SIGTERM within the grace period.
func TestDeploymentServesMixer(t *testing.T) {
	bin := buildLikeDockerfile(t)
	cases := []struct {
		name, deployment, handler string
		mutual                    bool
	}{
		{"plaintext", "kubernetes/deployment.yaml", "analyticprom-prometheus.yaml", false},
		{"mutual TLS", "kubernetes/mtls/deployment.yaml", "analyticprom-prometheus-mtls.yaml", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := loadFiles(t, "kubernetes/adapter.yaml", "kubernetes/template-metric.yaml", c.deployment,
				"kubernetes/samples/analyticcounter.yaml", "kubernetes/samples/"+c.handler)
			require.Len(t, objs.deployments, 1)
			d := objs.deployments[0]
			secrets := fakeSecrets(t)
			p := startPod(t, bin, d, secrets, nil)
			require.Equal(t, podName, p.serving["replica"], "replica labels must carry the pod name")
			require.Equal(t, c.mutual, p.serving["mutual_tls"])

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			// The kubelet's probes.
			ct := container(t, d)
			require.Equal(t, http.StatusOK, httpStatus(t, "http://"+p.http+ct.ReadinessProbe.HTTPGet.Path))
			if ct.LivenessProbe.GRPC != nil {
				st, err := healthCheck(ctx, p.grpc, insecure.NewCredentials())
				require.NoError(t, err)
				require.Equal(t, healthpb.HealthCheckResponse_SERVING, st)
			} else {
				require.Equal(t, http.StatusOK, httpStatus(t, "http://"+p.http+ct.LivenessProbe.HTTPGet.Path))
			}

			if c.mutual {
				// Only a client with a certificate from Istio's CA gets in.
				_, err := healthCheck(ctx, p.grpc, insecure.NewCredentials())
				require.Error(t, err, "plaintext reached a TLS port")
				_, err = healthCheck(ctx, p.grpc, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec // no client certificate is the point
				require.Error(t, err, "a client without a certificate got in")
			}

			// Mixer: its copy of its Secret is mounted at /etc/certs.
			store, err := objs.mixerStore()
			require.NoError(t, err)
			for _, h := range store.Handlers() {
				if a := h.Connection.Authentication; a != nil && a.Mutual != nil {
					dir := p.secretDirs["istio.istio-mixer-service-account"]
					for _, f := range []*string{&a.Mutual.PrivateKey, &a.Mutual.ClientCertificate, &a.Mutual.CACertificates} {
						*f = strings.Replace(*f, mixerSecretMount, dir, 1)
					}
				}
			}
			mixer, err := dispatch.New(store, dispatch.Options{Address: p.grpc, SystemRoots: filepath.Join(t.TempDir(), "none")})
			require.NoError(t, err)
			defer mixer.Close()
			bag := func(path string) expr.Bag {
				return expr.MapBag{"request.path": path, "request.method": "GET", "response.code": int64(200),
					"destination.service.name": "damage", "source.workload.name": "client"}
			}
			rep := mixer.Build([]expr.Bag{bag("/v1/damage?analytic=1"), bag("/v1/damage?analytic=2"), bag("/v1/health")})
			require.Empty(t, rep.Errors)
			require.Len(t, rep.Calls, 1)
			for _, res := range mixer.SendAll(ctx, rep.Calls) {
				require.NoError(t, res.Err)
			}

			// The counter appears on /metrics, one series per path.
			want := map[string]float64{"/v1/damage?analytic=1": 1, "/v1/damage?analytic=2": 1}
			require.Eventually(t, func() bool {
				fam := scrape(t, p.http)["istio_analytic_requests"]
				if fam == nil {
					return false
				}
				got := map[string]float64{}
				for _, m := range fam.Metric {
					for _, l := range m.Label {
						if l.GetName() == "request_path" {
							got[l.GetValue()] += m.GetCounter().GetValue()
						}
					}
				}
				return len(got) == len(want) && got["/v1/damage?analytic=1"] == 1 && got["/v1/damage?analytic=2"] == 1
			}, 10*time.Second, 50*time.Millisecond, "istio_analytic_requests did not reach /metrics")

			// SIGTERM: drained and flushed within the grace period, exit 0.
			grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
			start := time.Now()
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			select {
			case err := <-p.exited:
				p.exited <- err
				require.NoError(t, err, "meshmetrics did not exit cleanly on SIGTERM")
				require.Less(t, time.Since(start), grace)
			case <-time.After(grace):
				t.Fatalf("meshmetrics outlived the %s grace period; the kubelet would SIGKILL it", grace)
			}
		})
	}
}
