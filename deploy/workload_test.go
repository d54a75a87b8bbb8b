package deploy

import (
	"maps"
	"net"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// tb is the part of testing.TB the checks use, so that a test can hand
// them a fakeT and see them fail.
type tb interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	FailNow()
}

// fakeT records a failure and stops the check, as t.FailNow would.
type fakeT struct{ failed bool }

// errFakeFailNow is what fakeT panics with to unwind the check.
type errFakeFailNow struct{}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatalf(string, ...any) { f.failed = true; panic(errFakeFailNow{}) }
func (f *fakeT) FailNow()              { f.failed = true; panic(errFakeFailNow{}) }

// flagSpec is what `meshmetrics --help` says of the flags: the default of
// each, and the environment variable that sets it.
type flagSpec struct {
	defaults map[string]string // flag -> default
	byEnv    map[string]string // MESHMETRICS_* -> flag
	envOf    map[string]string // flag -> MESHMETRICS_*
}

// readFlags asks the binary, so the manifests are checked against the flags
// the image really has.
func readFlags(t *testing.T, bin string) flagSpec {
	t.Helper()
	out, err := exec.Command(bin, "--help").CombinedOutput()
	require.NoError(t, err, "%s", out)
	spec := flagSpec{defaults: map[string]string{}, byEnv: map[string]string{}, envOf: map[string]string{}}
	re := regexp.MustCompile(`(?m)^  --([a-z0-9-]+) \(default (.*), env ([A-Z0-9_]+)\)$`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		def := m[2]
		if def == `""` {
			def = ""
		}
		spec.defaults[m[1]] = def
		spec.byEnv[m[3]] = m[1]
		spec.envOf[m[1]] = m[3]
	}
	require.Contains(t, spec.defaults, "grpc-address", "unexpected --help format:\n%s", out)
	return spec
}

// effectiveFlags is what the container's process runs with: the defaults,
// then MESHMETRICS_* variables, then arguments, as cmd/meshmetrics applies
// them. Every argument and variable must be one the binary knows.
func effectiveFlags(t tb, flags flagSpec, c *corev1.Container) map[string]string {
	t.Helper()
	require.Empty(t, c.Command, "the image's ENTRYPOINT is the binary; flags go in args")
	s := maps.Clone(flags.defaults)
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "MESHMETRICS_") {
			continue
		}
		name, ok := flags.byEnv[e.Name]
		require.True(t, ok, "%s is not a meshmetrics variable", e.Name)
		if e.ValueFrom != nil {
			s[name] = "<from the pod>"
		} else {
			s[name] = e.Value
		}
	}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		require.True(t, strings.HasPrefix(a, "--") && ok, "argument %q: write flags as --name=value", a)
		_, known := flags.defaults[name]
		require.True(t, known, "--%s is not a meshmetrics flag", name)
		s[name] = value
	}
	return s
}

func addressPort(t tb, address string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(address)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return int32(n)
}

// containerPort resolves a probe's or Service's port, by name or number.
func containerPort(t tb, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %s", c.Name, p.StrVal)
	return 0
}

func portNamed(t tb, c *corev1.Container, name string) int32 {
	t.Helper()
	return containerPort(t, c, intstr.FromString(name))
}

func volume(t tb, d *appsv1.Deployment, name string) *corev1.Volume {
	t.Helper()
	for i := range d.Spec.Template.Spec.Volumes {
		if v := &d.Spec.Template.Spec.Volumes[i]; v.Name == name {
			return v
		}
	}
	t.Fatalf("deployment %s has no volume %s", d.Name, name)
	return nil
}

// secretFile finds the Secret volume that provides file (an absolute path
// in the container) and the key the file comes from.
func secretFile(t tb, d *appsv1.Deployment, file string) (secretName, key string) {
	t.Helper()
	c := &d.Spec.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		v := volume(t, d, m.Name)
		require.NotNil(t, v.Secret, "%s is mounted from volume %s, which is not a Secret", file, m.Name)
		base := path.Base(file)
		if len(v.Secret.Items) == 0 {
			return v.Secret.SecretName, base
		}
		for _, it := range v.Secret.Items {
			if it.Path == base {
				return v.Secret.SecretName, it.Key
			}
		}
		t.Fatalf("volume %s does not project %s", m.Name, base)
	}
	t.Fatalf("no volume is mounted where %s lives", file)
	return "", ""
}

func requireServicePort(t tb, svc *corev1.Service, name string) corev1.ServicePort {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("service %s has no port %s", svc.Name, name)
	return corev1.ServicePort{}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// servicesOf are the Services whose selector picks d's pods.
func servicesOf(objs *objects, d *appsv1.Deployment) []*corev1.Service {
	var out []*corev1.Service
	for _, s := range objs.services {
		if s.Namespace == d.Namespace && selects(s.Spec.Selector, d.Spec.Template.Labels) {
			out = append(out, s)
		}
	}
	return out
}

// checkWorkload holds every Deployment in objs to what running next to
// Mixer needs, against the binary's flags.
func checkWorkload(t tb, flags flagSpec, objs *objects) {
	t.Helper()
	require.NotEmpty(t, objs.deployments)
	for _, d := range objs.deployments {
		c := container(t, d)
		pod := &d.Spec.Template.Spec
		s := effectiveFlags(t, flags, c)
		grpcPort, httpPort := addressPort(t, s["grpc-address"]), addressPort(t, s["http-address"])
		tlsOn := s["tls-cert"] != ""

		// The selector picks the template's pods.
		require.True(t, selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels))

		// Ports are the ones the flags make the process listen on.
		require.Equal(t, grpcPort, portNamed(t, c, "grpc"))
		require.Equal(t, httpPort, portNamed(t, c, "http-metrics"))

		// Probes hit real ports and paths (the run test calls them).
		require.NotNil(t, c.ReadinessProbe)
		require.NotNil(t, c.ReadinessProbe.HTTPGet, "readiness is /readyz: it also fails when a sink is saturated")
		require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
		require.Equal(t, httpPort, containerPort(t, c, c.ReadinessProbe.HTTPGet.Port))
		require.NotNil(t, c.LivenessProbe)
		if g := c.LivenessProbe.GRPC; g != nil {
			require.False(t, tlsOn, "the kubelet's gRPC probe is plaintext; with TLS it would always fail")
			require.Equal(t, grpcPort, g.Port)
		} else {
			require.NotNil(t, c.LivenessProbe.HTTPGet)
			require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
			require.Equal(t, httpPort, containerPort(t, c, c.LivenessProbe.HTTPGet.Port))
		}

		// The kubelet must not kill the adapter while it flushes.
		shutdown, err := time.ParseDuration(s["shutdown-timeout"])
		require.NoError(t, err)
		require.NotNil(t, pod.TerminationGracePeriodSeconds)
		require.Greater(t, time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second, shutdown)

		// Replica labels and tags carry the pod name.
		var replica *corev1.EnvVar
		for i := range c.Env {
			if c.Env[i].Name == flags.envOf["replica"] {
				replica = &c.Env[i]
			}
		}
		require.NotNil(t, replica, "%s is not set", flags.envOf["replica"])
		require.NotNil(t, replica.ValueFrom)
		require.Equal(t, "metadata.name", replica.ValueFrom.FieldRef.FieldPath)

		ann := d.Spec.Template.Annotations
		require.Equal(t, "false", ann["sidecar.istio.io/inject"], "Mixer calls the adapter directly")
		require.Equal(t, "true", ann["prometheus.io/scrape"])
		require.Equal(t, strconv.Itoa(int(httpPort)), ann["prometheus.io/port"])
		require.Equal(t, "/metrics", ann["prometheus.io/path"])

		// Non-root on a read-only root filesystem.
		require.NotNil(t, pod.SecurityContext.RunAsNonRoot)
		require.True(t, *pod.SecurityContext.RunAsNonRoot)
		require.NotZero(t, *pod.SecurityContext.RunAsUser)
		require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
		require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
		require.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)
		require.False(t, c.Resources.Requests.Cpu().IsZero())
		require.False(t, c.Resources.Requests.Memory().IsZero())
		require.False(t, c.Resources.Limits.Memory().IsZero())

		// A pinned image.
		require.NotContains(t, c.Image, ":latest")
		require.Regexp(t, `^[a-z0-9./-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$`, c.Image)

		// The config directory of the Mixer-less mode is a mounted volume of
		// ConfigMaps the manifests hold.
		if dir := s["config-dir"]; dir != "" {
			var v *corev1.Volume
			for _, m := range c.VolumeMounts {
				if m.MountPath == dir {
					require.True(t, m.ReadOnly, "--config-dir %s is mounted writable", dir)
					v = volume(t, d, m.Name)
				}
			}
			require.NotNil(t, v, "no volume is mounted at --config-dir %s", dir)
			require.NotNil(t, v.Projected, "--config-dir %s: a projected volume of ConfigMaps", dir)
			for _, src := range v.Projected.Sources {
				require.NotNil(t, src.ConfigMap)
				found := false
				for _, o := range objs.all {
					if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == src.ConfigMap.Name && cm.Namespace == d.Namespace {
						found = true
					}
				}
				require.True(t, found, "ConfigMap %s of --config-dir is not in the manifests", src.ConfigMap.Name)
			}
		}

		// TLS files come from a mounted Secret key.
		for _, f := range []string{"tls-cert", "tls-key", "tls-client-ca"} {
			if s[f] != "" {
				secretFile(t, d, s[f])
			}
		}

		// A Service reaches both ports; headless by default so that Mixer
		// sees every replica.
		svcs := servicesOf(objs, d)
		require.Len(t, svcs, 1, "one Service selects deployment %s", d.Name)
		for _, p := range []struct {
			name string
			port int32
		}{{"grpc", grpcPort}, {"http-metrics", httpPort}} {
			sp := requireServicePort(t, svcs[0], p.name)
			require.Equal(t, p.port, containerPort(t, c, sp.TargetPort))
			// Through a headless Service, clients dial the pod: the Service
			// port must be the container port.
			require.Equal(t, p.port, sp.Port)
		}
	}
}

func TestDeploymentsMatchTheFlags(t *testing.T) {
	flags := readFlags(t, buildLikeDockerfile(t))
	cases := []struct {
		name  string
		files []string
	}{
		{"plaintext", []string{"kubernetes/deployment.yaml", "kubernetes/service.yaml"}},
		{"mutual TLS", []string{"kubernetes/mtls/deployment.yaml", "kubernetes/service.yaml"}},
		{"Mixer-less", []string{"kubernetes/mixerless/deployment.yaml", "kubernetes/mixerless/configmap.yaml", "kubernetes/service.yaml"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkWorkload(t, flags, loadFiles(t, c.files...))
		})
	}
}

func TestWorkloadChecksCatchMistakes(t *testing.T) {
	// checkWorkload is what the manifests are held to; make sure it fails
	// where it should, on flags the binary reports.
	flags := flagSpec{
		defaults: map[string]string{"grpc-address": ":50000", "http-address": ":42422", "shutdown-timeout": "25s", "replica": "", "tls-cert": "", "config-dir": "",
			"max-connection-age": "60s", "log-format": "text", "log-level": "info"},
		byEnv: map[string]string{"MESHMETRICS_REPLICA": "replica", "MESHMETRICS_SHUTDOWN_TIMEOUT": "shutdown-timeout"},
		envOf: map[string]string{"replica": "MESHMETRICS_REPLICA", "shutdown-timeout": "MESHMETRICS_SHUTDOWN_TIMEOUT"},
	}
	cases := []struct {
		name   string
		mutate func(d *appsv1.Deployment)
	}{
		{"port not what the flag says", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Args = append(d.Spec.Template.Spec.Containers[0].Args, "--grpc-address=:9000")
		}},
		{"unknown flag", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Args = append(d.Spec.Template.Spec.Containers[0].Args, "--grpc-port=9000")
		}},
		{"grace period below the shutdown timeout", func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Args = append(c.Args, "--shutdown-timeout=60s")
		}},
		{"unknown variable", func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, corev1.EnvVar{Name: "MESHMETRICS_GRPC_PORT", Value: "50000"})
		}},
		{"readiness on the wrong path", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Path = "/ready"
		}},
		{"gRPC probe with TLS", func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Args = append(c.Args, "--tls-cert=/etc/meshmetrics/librato/token")
		}},
		{"config directory not mounted", func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Args = append(c.Args, "--config-dir=/etc/meshmetrics/config")
		}},
		{"latest image", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = "ghcr.io/meshmetrics/meshmetrics:latest"
		}},
		{"root filesystem writable", func(d *appsv1.Deployment) {
			f := false
			d.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &f
		}},
		{"Service selects other pods", func(d *appsv1.Deployment) {
			d.Spec.Template.Labels["app.kubernetes.io/name"] = "other"
			d.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other"
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := loadFiles(t, "kubernetes/deployment.yaml", "kubernetes/service.yaml")
			c.mutate(objs.deployments[0])
			ft := &fakeT{}
			func() {
				defer func() {
					if r := recover(); r != nil {
						_, ok := r.(errFakeFailNow)
						require.True(t, ok, "the check panicked: %v", r)
					}
				}()
				checkWorkload(ft, flags, objs)
			}()
			require.True(t, ft.failed, "checkWorkload accepted the mistake")
		})
	}
	t.Run("unchanged passes", func(t *testing.T) {
		checkWorkload(t, flags, loadFiles(t, "kubernetes/deployment.yaml", "kubernetes/service.yaml"))
	})
}
