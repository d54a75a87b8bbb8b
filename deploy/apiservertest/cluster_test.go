package apiservertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chartutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/meshmetrics/meshmetrics/deploy/internal/toolcache"
)

// kubernetesVersion is the API server's version.
const kubernetesVersion = toolcache.KubernetesVersion

// buildAPIServer returns kube-apiserver from the tool cache, building it
// when absent (make test-tools builds it before the tests).
func buildAPIServer(t *testing.T) string {
	t.Helper()
	r, err := toolcache.KubeAPIServer("../apiserver")
	require.NoError(t, err)
	if r.Built > 0 {
		t.Logf("built kube-apiserver %s in %s (cached in %s)", kubernetesVersion, r.Built.Round(time.Second), r.Path)
	}
	return r.Path
}

// ensureEtcd returns Debian's etcd, installing etcd-server when it is
// absent, as .ci/install-deps does.
func ensureEtcd(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	var sudo []string
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			t.Fatal("etcd is not installed and neither root nor sudo is available to install it: run `make deps` as root")
		}
		sudo = []string{"sudo", "-n"}
	}
	run := func(args ...string) {
		args = append(sudo, args...)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	run("apt-get", "update", "-qq")
	run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "etcd-server")
	stop := append(sudo, "service", "etcd", "stop")
	_ = exec.Command(stop[0], stop[1:]...).Run()
	p, err := exec.LookPath("etcd")
	require.NoError(t, err, "etcd-server installed but etcd is not on PATH")
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// start runs a process until the test ends; its output goes to a log file
// shown when the test fails.
func start(t *testing.T, dir, name string, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				if len(b) > 20000 {
					b = b[len(b)-20000:]
				}
				t.Logf("%s log (end):\n%s", name, b)
			}
		}
	})
}

func startEtcd(t *testing.T, bin, dir string) string {
	t.Helper()
	client, peer := "http://"+freeAddr(t), "http://"+freeAddr(t)
	start(t, dir, "etcd", bin, "--name=test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=test="+peer,
		"--log-level=warn")
	require.Eventually(t, func() bool {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "etcd did not become healthy")
	return client
}

// pki writes a client CA, an admin client certificate (system:masters)
// and the service-account key pair, and returns the admin's PEM.
func pki(t *testing.T, dir string) (certPEM, keyPEM []byte) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	keyPEMOf := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "apiservertest-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))

	adminKey := newKey()
	adminTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	adminDER, err := x509.CreateCertificate(rand.Reader, adminTmpl, ca, &adminKey.PublicKey, caKey)
	require.NoError(t, err)

	saKey := newKey()
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.key"), keyPEMOf(saKey), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}), 0o600))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: adminDER}), keyPEMOf(adminKey)
}

// warnings records the Warning headers the API server sends (deprecated
// APIs, PodSecurity violations, unknown fields under Warn validation).
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// take returns the warnings since the last call.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// cluster is a running API server and clients of it.
type cluster struct {
	cfg      *rest.Config
	dyn      dynamic.Interface
	disc     *discovery.DiscoveryClient
	mapper   meta.RESTMapper
	warnings *warnings
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	apiserver := buildAPIServer(t)
	etcd := ensureEtcd(t)
	dir := t.TempDir()
	etcdURL := startEtcd(t, etcd, dir)
	certPEM, keyPEM := pki(t, dir)
	addr := freeAddr(t)
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	start(t, dir, "kube-apiserver", apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address="+host, "--secure-port="+port, "--advertise-address="+host,
		"--cert-dir="+filepath.Join(dir, "serving"),
		"--client-ca-file="+filepath.Join(dir, "ca.crt"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		// Only allocated, never routed: nothing here sends traffic to it.
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--profiling=false")
	w := &warnings{}
	cfg := &rest.Config{Host: "https://" + addr, TLSClientConfig: rest.TLSClientConfig{CertData: certPEM, KeyData: keyPEM},
		WarningHandler: w, QPS: 200, Burst: 400, Timeout: 30 * time.Second}
	// The serving certificate is self-signed into --cert-dir at start.
	require.Eventually(t, func() bool {
		ca, err := os.ReadFile(filepath.Join(dir, "serving", "apiserver.crt"))
		if err != nil {
			return false
		}
		cfg.CAData = ca
		return true
	}, 60*time.Second, 100*time.Millisecond, "kube-apiserver wrote no serving certificate")
	c := &cluster{cfg: cfg, warnings: w}
	c.disc, err = discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	var last string
	ok := eventually(90*time.Second, func() bool {
		body, err := c.disc.RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		last = fmt.Sprintf("%s %v", body, err)
		return err == nil
	})
	require.True(t, ok, "kube-apiserver did not become ready: %s", last)
	c.dyn, err = dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	c.refreshMapper(t)
	w.take()
	return c
}

func (c *cluster) refreshMapper(t *testing.T) {
	t.Helper()
	groups, err := restmapper.GetAPIGroupResources(c.disc)
	require.NoError(t, err)
	c.mapper = restmapper.NewDiscoveryRESTMapper(groups)
}

// capabilities are what Helm reads from the live server: its version and
// every group/version and group/version/Kind it serves.
func (c *cluster) capabilities(t *testing.T) *chartutil.Capabilities {
	t.Helper()
	v, err := c.disc.ServerVersion()
	require.NoError(t, err)
	_, lists, err := c.disc.ServerGroupsAndResources()
	require.NoError(t, err)
	var versions chartutil.VersionSet
	for _, l := range lists {
		versions = append(versions, l.GroupVersion)
		for _, r := range l.APIResources {
			versions = append(versions, l.GroupVersion+"/"+r.Kind)
		}
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: v.GitVersion, Major: v.Major, Minor: v.Minor}
	caps.APIVersions = versions
	return caps
}

// object is one document decoded.
type object struct {
	u       *unstructured.Unstructured
	mapping *meta.RESTMapping
}

func (c *cluster) decode(t *testing.T, doc string) *object {
	t.Helper()
	data, err := yaml.YAMLToJSONStrict([]byte(doc))
	require.NoError(t, err)
	u := &unstructured.Unstructured{}
	require.NoError(t, json.Unmarshal(data, &u.Object))
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	require.NoError(t, err, "%s is not served", gvk)
	if m.Scope.Name() == meta.RESTScopeNameNamespace && u.GetNamespace() == "" {
		u.SetNamespace("default")
	}
	return &object{u: u, mapping: m}
}

func (c *cluster) resource(o *object) dynamic.ResourceInterface {
	if o.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(o.mapping.Resource).Namespace(o.u.GetNamespace())
	}
	return c.dyn.Resource(o.mapping.Resource)
}

// applyOptions: server-side apply as kubectl apply --server-side
// --validate=strict --force-conflicts would.
type applyOptions struct {
	manager    string
	validation string // Strict unless set
	dryRun     bool
	// tolerate matches warnings that are expected (of third-party data).
	tolerate *regexp.Regexp
}

// apply server-side-applies one object.
func (c *cluster) apply(ctx context.Context, o *object, opts applyOptions) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(o.u.Object)
	if err != nil {
		return nil, err
	}
	if opts.manager == "" {
		opts.manager = "kubectl"
	}
	if opts.validation == "" {
		opts.validation = metav1.FieldValidationStrict
	}
	force := true
	po := metav1.PatchOptions{FieldManager: opts.manager, Force: &force, FieldValidation: opts.validation}
	if opts.dryRun {
		po.DryRun = []string{metav1.DryRunAll}
	}
	return c.resource(o).Patch(ctx, o.u.GetName(), types.ApplyPatchType, data, po)
}

// create creates one object (strictly validated), for kinds that are
// created rather than applied, such as a dry-run Pod.
func (c *cluster) create(ctx context.Context, o *object, dryRun bool) error {
	co := metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		co.DryRun = []string{metav1.DryRunAll}
	}
	_, err := c.resource(o).Create(ctx, o.u, co)
	return err
}

func (c *cluster) delete(ctx context.Context, o *object) error {
	err := c.resource(o).Delete(ctx, o.u.GetName(), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (c *cluster) get(ctx context.Context, t *testing.T, gvr schema.GroupVersionResource, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := c.dyn.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return u
}

// splitYAML splits a stream into documents that hold more than comments.
func splitYAML(text string) []string {
	var docs []string
	for _, d := range strings.Split("\n"+text, "\n---") {
		for _, line := range strings.Split(d, "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				docs = append(docs, d)
				break
			}
		}
	}
	return docs
}

func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
