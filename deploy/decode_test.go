package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	policyv1beta1 "k8s.io/api/policy/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/meshmetrics/meshmetrics/adapter/rules/attributes"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// mixerObject is the Kubernetes envelope of a Mixer config CR. Its spec is
// checked by crd, which decodes it as strictly as Mixer's jsonpb does.
type mixerObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              map[string]any `json:"spec"`
}

// newObject returns the typed struct a document of apiVersion/kind decodes
// into; a kind the deploy files should not contain has none.
func newObject(apiVersion, kind string) (any, bool) {
	if apiVersion == crd.APIVersion {
		switch kind {
		case crd.KindAdapter, crd.KindTemplate, crd.KindHandler, crd.KindInstance, crd.KindRule, crd.KindAttributeManifest:
			return &mixerObject{}, true
		}
		return nil, false
	}
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "policy/v1beta1/PodDisruptionBudget":
		return &policyv1beta1.PodDisruptionBudget{}, true
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, true
	case "monitoring.coreos.com/v1/PodMonitor":
		return &monitoringv1.PodMonitor{}, true
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	}
	return nil, false
}

// unmarshalStrict decodes YAML the way the API server's strict field
// validation does: duplicate keys, unknown fields and fields spelled in
// another case all fail. (encoding/json, and so yaml.UnmarshalStrict, would
// take clusterIp for clusterIP.)
func unmarshalStrict(doc string, obj any) error {
	data, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(data, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// splitDocs splits a YAML stream on "---" lines, as kubectl does, and drops
// documents that hold only comments.
func splitDocs(text string) []string {
	var docs []string
	var cur strings.Builder
	flush := func() {
		doc := cur.String()
		cur.Reset()
		for _, line := range strings.Split(doc, "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				docs = append(docs, doc)
				return
			}
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20) // the adapter CR's config is one long line
	for sc.Scan() {
		if strings.TrimRight(sc.Text(), " ") == "---" {
			flush()
			continue
		}
		cur.WriteString(sc.Text())
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// objects is a set of decoded deploy documents.
type objects struct {
	all          []any
	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	secrets      []*corev1.Secret
	mixerSources []crd.Source
}

// decodeStrict decodes every document of text into its Kubernetes API type,
// failing on unknown fields, duplicate keys and kinds the deploy files
// should not hold.
func decodeStrict(name, text string) (*objects, error) {
	objs := &objects{}
	for i, doc := range splitDocs(text) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		obj, ok := newObject(tm.APIVersion, tm.Kind)
		if !ok {
			return nil, fmt.Errorf("%s: document %d: unexpected kind %s %s", name, i, tm.APIVersion, tm.Kind)
		}
		if err := unmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", name, i, tm.Kind, err)
		}
		objs.all = append(objs.all, obj)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			objs.deployments = append(objs.deployments, o)
		case *corev1.Service:
			objs.services = append(objs.services, o)
		case *corev1.Secret:
			objs.secrets = append(objs.secrets, o)
		case *mixerObject:
			objs.mixerSources = append(objs.mixerSources, crd.Source{Name: fmt.Sprintf("%s#%d", name, i), Data: []byte(doc)})
		}
	}
	return objs, nil
}

func (o *objects) add(other *objects) {
	o.all = append(o.all, other.all...)
	o.deployments = append(o.deployments, other.deployments...)
	o.services = append(o.services, other.services...)
	o.secrets = append(o.secrets, other.secrets...)
	o.mixerSources = append(o.mixerSources, other.mixerSources...)
}

// mixerStore loads the Mixer CRs with Istio's standard attribute manifests,
// as Mixer's config store would see them.
func (o *objects) mixerStore() (*crd.Store, error) {
	return crd.LoadSources(append([]crd.Source{attributes.Source()}, o.mixerSources...))
}

// loadFiles reads and strictly decodes deploy files (paths relative to
// the deploy directory).
func loadFiles(t *testing.T, files ...string) *objects {
	t.Helper()
	all := &objects{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		objs, err := decodeStrict(f, string(data))
		require.NoError(t, err)
		all.add(objs)
	}
	return all
}

// plainFiles lists every YAML file under kubernetes/, samples included.
func plainFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(PlainDir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && (filepath.Ext(p) == ".yaml" || filepath.Ext(p) == ".yml") {
			files = append(files, p)
		}
		return err
	})
	require.NoError(t, err)
	sort.Strings(files)
	return files
}

func TestStrictDecodingRejectsWhatKubernetesWould(t *testing.T) {
	// The decoder must fail where kubectl's server-side validation would,
	// or the tests below would pass on broken manifests.
	cases := []struct {
		name, doc, wantErr string
	}{
		{"valid", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: None}\n", ""},
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIPs: [None], headless: true}\n", `unknown field "spec.headless"`},
		{"field in another case", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIp: None}\n", `unknown field "spec.clusterIp"`},
		{"duplicate key", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nmetadata: {name: b}\n", `"metadata" already set`},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {replicas: two}\n", "cannot unmarshal string"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n", "unexpected kind v1 Pod"},
		{"removed API", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n", "unexpected kind extensions/v1beta1 Deployment"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeStrict(c.name, c.doc)
			if c.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.wantErr)
		})
	}
}

func TestSplitDocs(t *testing.T) {
	cases := []struct {
		name, text string
		want       int
	}{
		{"one", "a: 1\n", 1},
		{"separated", "a: 1\n---\nb: 2\n", 2},
		{"leading and trailing separators", "---\na: 1\n---\n", 1},
		{"comment-only document", "# nothing\n---\na: 1\n", 1},
		{"separator with trailing spaces", "a: 1\n---  \nb: 2\n", 2},
		{"indented dashes are content", "a: |\n  ---\n", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Len(t, splitDocs(c.text), c.want)
		})
	}
}
