// Package deploy renders the Helm chart in helm/meshmetrics into the plain
// manifests in kubernetes/, and its tests check every deploy file: strict
// decoding into Kubernetes API types, the references between them and to
// the adapter's flags and params, and the Dockerfile's build.
//
// The plain manifests are the chart rendered with its default values (plus a
// few documented variants), so the two cannot drift apart: `go run
// ./deploy/render` rewrites them and the tests fail when they differ.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// Paths relative to the deploy directory.
const (
	ChartDir = "helm/meshmetrics"
	PlainDir = "kubernetes"
	// SamplesDir holds handler, instance and rule samples, written by hand.
	SamplesDir = "kubernetes/samples"
)

// The release the plain manifests are rendered as: the Service is then
// meshmetrics.istio-system, the address the sample handlers dial.
const (
	ReleaseName      = "meshmetrics"
	ReleaseNamespace = "istio-system"
)

// Generated lists the plain manifests `make generate` writes (config/gencr).
// The chart reads them through symbolic links in files/ (a chart can only
// read files inside itself; Helm follows the links, and `helm package`
// stores the content) and emits them unchanged, so rendering reproduces
// them byte for byte and cannot go stale.
func Generated() []string { return []string{"adapter.yaml", "template-metric.yaml"} }

// Variant is one rendering of the chart into plain manifests.
type Variant struct {
	Name string
	// Values is YAML merged over the chart's values.yaml.
	Values string
	// Files maps a template (its name under templates/) to the plain
	// manifest it is written to, relative to PlainDir. Templates not listed
	// are not written.
	Files map[string]string
}

// Variants are the renderings that make up deploy/kubernetes. A function
// rather than a variable, so that no caller can change them.
func Variants() []Variant {
	return []Variant{
		{
			Name: "defaults",
			Files: map[string]string{
				"adapter.yaml":         "adapter.yaml",
				"template-metric.yaml": "template-metric.yaml",
				"serviceaccount.yaml":  "serviceaccount.yaml",
				"deployment.yaml":      "deployment.yaml",
				"service.yaml":         "service.yaml",
				"pdb.yaml":             "pdb.yaml",
			},
		},
		{
			// The pieces not everyone wants: they need a token, the Prometheus
			// Operator or a metrics server.
			Name: "optional",
			Values: `librato: {secret: {create: true}}
autoscaling: {enabled: true}
serviceMonitor: {enabled: true}
`,
			Files: map[string]string{
				"librato-secret.yaml": "optional/librato-secret.yaml",
				"hpa.yaml":            "optional/hpa.yaml",
				"servicemonitor.yaml": "optional/servicemonitor.yaml",
			},
		},
		{
			// Mutual TLS with Istio's certificates, to pair with the *-mtls
			// sample handlers.
			Name:   "mtls",
			Values: "tls: {enabled: true}\n",
			Files: map[string]string{
				"deployment.yaml": "mtls/deployment.yaml",
			},
		},
	}
}

// Render renders the chart in chartDir as `helm template meshmetrics
// <chartDir> -n istio-system -f <values>` would, with caps as the cluster's
// capabilities (nil: Helm's defaults). It returns the non-empty manifests by
// template name (deployment.yaml), each trimmed to end in one newline.
//
// The engine runs in strict mode, so a template that reads a value missing
// from values.yaml fails instead of rendering an empty string.
func Render(chartDir, values string, caps *chartutil.Capabilities) (map[string]string, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	overlay, err := chartutil.ReadValues([]byte(values))
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	opts := chartutil.ReleaseOptions{Name: ReleaseName, Namespace: ReleaseNamespace, Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValues(chrt, overlay, opts, caps)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	out, err := engine.Engine{Strict: true}.Render(chrt, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering: %w", err)
	}
	prefix := chrt.Name() + "/templates/"
	manifests := map[string]string{}
	for name, text := range out {
		name = strings.TrimPrefix(name, prefix)
		if path.Ext(name) != ".yaml" || strings.TrimSpace(text) == "" {
			continue
		}
		manifests[name] = strings.TrimSpace(text) + "\n"
	}
	return manifests, nil
}

// Plain renders every variant and returns the plain manifests they make,
// keyed by path relative to PlainDir.
func Plain(deployDir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, v := range Variants() {
		out, err := Render(filepath.Join(deployDir, ChartDir), v.Values, nil)
		if err != nil {
			return nil, fmt.Errorf("variant %s: %w", v.Name, err)
		}
		for tpl, dest := range v.Files {
			text, ok := out[tpl]
			if !ok {
				return nil, fmt.Errorf("variant %s: template %s rendered nothing", v.Name, tpl)
			}
			files[dest] = []byte(text)
		}
	}
	return files, nil
}

// Write rewrites the plain manifests. It never writes the generated files
// themselves: it fails if the chart does not reproduce them.
func Write(deployDir string) error {
	files, err := Plain(deployDir)
	if err != nil {
		return err
	}
	for _, dest := range sortedKeys(files) {
		p := filepath.Join(deployDir, PlainDir, dest)
		if slices.Contains(Generated(), dest) {
			have, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if !bytes.Equal(bytes.TrimSpace(have), bytes.TrimSpace(files[dest])) {
				return fmt.Errorf("%s: the chart does not reproduce the generated file", p)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[dest], 0o644); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
