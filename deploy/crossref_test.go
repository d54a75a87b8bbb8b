package deploy

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
	"github.com/meshmetrics/meshmetrics/config"
)

// mixerSecretMount is where Istio mounts the Secret of Mixer's service
// account (istio.istio-mixer-service-account) in istio-telemetry.
const mixerSecretMount = "/etc/certs"

// sampleSet is what a user applies together: the CRs, a Deployment, its
// Service, the optional Librato Secret and the samples of one flavour.
type sampleSet struct {
	name       string
	deployment string
	samples    []string
	// rules are the rule keys the set must resolve to.
	rules []string
}

func sampleSets() []sampleSet {
	return []sampleSet{
		{
			name:       "plaintext",
			deployment: "kubernetes/deployment.yaml",
			samples:    []string{"analyticcounter.yaml", "analyticprom-prometheus.yaml", "analyticprom-librato.yaml"},
			rules:      []string{"analyticprom-librato.rule.istio-system", "analyticprom.rule.istio-system"},
		},
		{
			name:       "mutual TLS",
			deployment: "kubernetes/mtls/deployment.yaml",
			samples:    []string{"analyticcounter.yaml", "analyticprom-prometheus-mtls.yaml", "analyticprom-librato-mtls.yaml"},
			rules:      []string{"analyticprom-librato.rule.istio-system", "analyticprom.rule.istio-system"},
		},
	}
}

func (s sampleSet) files() []string {
	files := []string{"kubernetes/adapter.yaml", "kubernetes/template-metric.yaml", "kubernetes/service.yaml",
		"kubernetes/optional/librato-secret.yaml", s.deployment}
	for _, f := range s.samples {
		files = append(files, "kubernetes/samples/"+f)
	}
	return files
}

// handlerParams encodes a handler's params the way Mixer does, driven by the
// adapter CR's descriptor, and decodes them the way the adapter does.
func handlerParams(t *testing.T, a *crd.Adapter, h *crd.Handler) *config.Params {
	t.Helper()
	schema, err := params.ParseSchema(a.Config)
	require.NoError(t, err)
	require.Equal(t, config.TypeURL, schema.TypeURL())
	raw, err := schema.Encode(h.Params)
	require.NoError(t, err, "handler %s: params do not fit the adapter's schema", h.Key())
	p, err := config.Decode(true, []byte(schema.TypeURL()), raw)
	require.NoError(t, err)
	norm, err := adapter.NormalizeParams(p)
	require.NoError(t, err, "handler %s: params are invalid", h.Key())
	return norm
}

// serviceAt finds the Service a handler's connection.address names.
func serviceAt(t *testing.T, objs *objects, address string) (*corev1.Service, int32) {
	t.Helper()
	host, port, err := net.SplitHostPort(address)
	require.NoError(t, err)
	name, rest, _ := strings.Cut(host, ".")
	namespace, suffix, _ := strings.Cut(rest, ".")
	require.Equal(t, "svc.cluster.local", suffix, "address %s is not a cluster Service name", address)
	for _, s := range objs.services {
		if s.Name == name && s.Namespace == namespace {
			return s, addressPort(t, net.JoinHostPort("", port))
		}
	}
	t.Fatalf("no Service %s/%s for address %s", namespace, name, address)
	return nil, 0
}

func secretHasKey(objs *objects, name, namespace, key string) bool {
	for _, s := range objs.secrets {
		if s.Name != name || s.Namespace != namespace {
			continue
		}
		_, inString := s.StringData[key]
		_, inData := s.Data[key]
		return inString || inData
	}
	return false
}

func TestSamplesResolveAgainstTheManifests(t *testing.T) {
	flags := readFlags(t, buildLikeDockerfile(t))
	for _, set := range sampleSets() {
		t.Run(set.name, func(t *testing.T) {
			objs := loadFiles(t, set.files()...)
			store, err := objs.mixerStore()
			require.NoError(t, err)

			// Every rule resolves as Mixer would resolve it: handlers,
			// their adapter and its templates, instances and their template,
			// and the match expression against Istio's attributes.
			rules, err := store.ResolveRules()
			require.NoError(t, err)
			var keys []string
			for _, r := range rules {
				keys = append(keys, r.Key())
			}
			require.Equal(t, set.rules, keys)

			require.Len(t, objs.deployments, 1)
			d := objs.deployments[0]
			c := container(t, d)
			s := effectiveFlags(t, flags, c)
			for _, r := range rules {
				// The samples count /v1/damage?analytic=... and nothing else.
				for p, want := range map[string]bool{"/v1/damage?analytic=1": true, "/v1/damage?analytic=": true, "/v1/damage": false, "/v1/other?analytic=1": false} {
					got, err := r.Matches(expr.MapBag{"request.path": p})
					require.NoError(t, err)
					require.Equal(t, want, got, "rule %s on %s", r.Key(), p)
				}
				for _, a := range r.Actions {
					require.Equal(t, "meshmetrics", a.Adapter.Name, "handler %s", a.Handler.Key())
					require.Equal(t, "meshmetrics.adapter.istio-system", a.Adapter.Key())
					for _, inst := range a.Instances {
						require.Equal(t, "metric.template.istio-system", inst.Template.Key())
					}
					checkHandlerReachesDeployment(t, objs, d, s, a.Handler, handlerParams(t, a.Adapter, a.Handler))
				}
			}
		})
	}
}

// checkHandlerReachesDeployment: the handler dials the Service of the
// Deployment on its gRPC port, with the authentication the Deployment
// serves, and its token file is where the Deployment mounts the Secret.
func checkHandlerReachesDeployment(t *testing.T, objs *objects, d *appsv1.Deployment, s map[string]string, h *crd.Handler, p *config.Params) {
	t.Helper()
	c := container(t, d)
	svc, port := serviceAt(t, objs, h.Connection.Address)
	require.Contains(t, servicesOf(objs, d), svc, "handler %s dials a Service that does not select the adapter", h.Key())
	require.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP, "handler %s: Mixer spreads calls only over a headless Service", h.Key())
	require.Equal(t, addressPort(t, s["grpc-address"]), port)
	require.Equal(t, port, containerPort(t, c, requireServicePort(t, svc, "grpc").TargetPort))

	mutual := h.Connection.Authentication != nil && h.Connection.Authentication.Mutual != nil
	require.Equal(t, s["tls-client-ca"] != "", mutual, "handler %s and the Deployment disagree on mutual TLS", h.Key())
	if mutual {
		m := h.Connection.Authentication.Mutual
		// Both ends use the Secret of Mixer's service account: Mixer from
		// its own mount, the adapter from the same Secret's keys, so the
		// adapter's certificate carries Mixer's SPIFFE SAN.
		for _, pair := range [][2]string{{m.ClientCertificate, s["tls-cert"]}, {m.PrivateKey, s["tls-key"]}, {m.CACertificates, s["tls-client-ca"]}} {
			require.Equal(t, mixerSecretMount, path.Dir(pair[0]))
			secret, key := secretFile(t, d, pair[1])
			require.Equal(t, "istio.istio-mixer-service-account", secret)
			require.Equal(t, path.Base(pair[0]), key)
		}
	}

	if p.Librato != nil && p.Librato.TokenPath != "" {
		secret, key := secretFile(t, d, p.Librato.TokenPath)
		require.True(t, secretHasKey(objs, secret, d.Namespace, key),
			"handler %s reads %s, but no Secret %s/%s with key %s is in the manifests", h.Key(), p.Librato.TokenPath, d.Namespace, secret, key)
	}
}

func TestTheAdapterCR(t *testing.T) {
	store, err := crd.Load("kubernetes/adapter.yaml", "kubernetes/template-metric.yaml")
	require.NoError(t, err)
	require.Len(t, store.Adapters(), 1)
	a := store.Adapters()[0]
	require.Equal(t, "meshmetrics", a.Name)
	require.NotEmpty(t, a.Description, "Istio 1.7 rejects an adapter CR without a description")
	require.False(t, a.SessionBased)
	require.Equal(t, []string{"metric"}, a.Templates)
	_, err = store.TemplatesOf(a)
	require.NoError(t, err)

	raw, err := base64.StdEncoding.DecodeString(a.Config)
	require.NoError(t, err)
	var fds descriptor.FileDescriptorSet
	require.NoError(t, proto.Unmarshal(raw, &fds))

	// Built with --include_imports, as mixgen requires: every import is in
	// the set.
	names := map[string]bool{}
	for _, f := range fds.File {
		names[f.GetName()] = true
	}
	for _, f := range fds.File {
		for _, dep := range f.Dependency {
			require.True(t, names[dep], "%s imports %s, which the set lacks", f.GetName(), dep)
		}
	}

	// The Params the CR describes are the Params the adapter decodes: the
	// file gogo registered for config.Params, source comments aside.
	registered := registeredFile(t, &config.Params{})
	var shipped *descriptor.FileDescriptorProto
	for _, f := range fds.File {
		if f.GetName() == registered.GetName() {
			shipped = proto.Clone(f).(*descriptor.FileDescriptorProto)
		}
	}
	require.NotNil(t, shipped, "the adapter CR does not describe %s", registered.GetName())
	require.NotNil(t, shipped.SourceCodeInfo, "built with --include_source_info, as mixgen does")
	shipped.SourceCodeInfo = nil
	// gogofaster registers the file with its own *_all file options added
	// (marshaler_all, sizer_all, ...); those are the generator's, not
	// config.proto's. Messages, enums and their field options must match.
	require.Equal(t, registered.GetOptions().GetGoPackage(), shipped.GetOptions().GetGoPackage())
	registered.Options, shipped.Options = nil, nil
	require.Equal(t, "adapter.meshmetrics.config", shipped.GetPackage())
	require.True(t, proto.Equal(registered, shipped), "deploy/kubernetes/adapter.yaml describes another config.proto than the code: run make generate")
	require.True(t, slices.ContainsFunc(shipped.MessageType, func(m *descriptor.DescriptorProto) bool { return m.GetName() == "Params" }))
}

// registeredFile is the FileDescriptorProto gogo registered for msg's file.
func registeredFile(t *testing.T, msg interface{ Descriptor() ([]byte, []int) }) *descriptor.FileDescriptorProto {
	t.Helper()
	gz, _ := msg.Descriptor()
	r, err := gzip.NewReader(bytes.NewReader(gz))
	require.NoError(t, err)
	raw, err := io.ReadAll(r)
	require.NoError(t, err)
	var fd descriptor.FileDescriptorProto
	require.NoError(t, proto.Unmarshal(raw, &fd))
	return &fd
}

func TestTheTemplateCR(t *testing.T) {
	store, err := crd.Load("kubernetes/template-metric.yaml")
	require.NoError(t, err)
	require.Len(t, store.Templates(), 1)
	tpl := store.Templates()[0]
	require.Equal(t, "metric.template.istio-system", tpl.Key())
	raw, err := base64.StdEncoding.DecodeString(tpl.Descriptor)
	require.NoError(t, err)
	var fds descriptor.FileDescriptorSet
	require.NoError(t, proto.Unmarshal(raw, &fds))
	var services []string
	for _, f := range fds.File {
		for _, s := range f.Service {
			services = append(services, f.GetPackage()+"."+s.GetName())
		}
	}
	require.Equal(t, []string{"metric.HandleMetricService"}, services)
}

func TestMutualTLSFieldsInEitherSpelling(t *testing.T) {
	// The samples spell connection.authentication.mutual in lowerCamelCase,
	// as Istio's handler CRD schema requires (an API server with strict
	// validation refuses ca_certificates; a lenient one prunes it). The
	// rules engine, and so mockmixer and the deploy tests, read both, as
	// Mixer does, to the same settings.
	data, err := os.ReadFile("kubernetes/samples/analyticprom-prometheus-mtls.yaml")
	require.NoError(t, err)
	camel := string(data)
	for _, f := range []string{"privateKey:", "clientCertificate:", "caCertificates:"} {
		require.Contains(t, camel, f)
	}
	snake := strings.NewReplacer("privateKey:", "private_key:", "clientCertificate:", "client_certificate:", "caCertificates:", "ca_certificates:").Replace(camel)
	mutual := func(doc string) crd.Mutual {
		store, err := crd.LoadSources([]crd.Source{{Name: "sample", Data: []byte(doc)}})
		require.NoError(t, err)
		require.Len(t, store.Handlers(), 1)
		a := store.Handlers()[0].Connection.Authentication
		require.NotNil(t, a)
		require.NotNil(t, a.Mutual)
		return *a.Mutual
	}
	m := mutual(camel)
	require.Equal(t, crd.Mutual{PrivateKey: "/etc/certs/key.pem", ClientCertificate: "/etc/certs/cert-chain.pem", CACertificates: "/etc/certs/root-cert.pem"}, m)
	require.Equal(t, m, mutual(snake))
}
