// Package attributes embeds Istio's standard attribute manifests, so that the mock Mixer
// can type-check expressions without the user passing a manifest.
package attributes

import (
	_ "embed"

	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// Name is how the embedded manifests are named in messages (crd.LoadError's file).
const Name = "<embedded istio attributes>"

//go:embed istio.yaml
var istio []byte

// Istio returns the `istioproxy` and `kubernetes` attribute manifests of Istio 1.3-1.7
// (istio-system), the same bytes as testdata/mixer/attributes.yaml.
func Istio() []byte { return append([]byte(nil), istio...) }

// Source is Istio as a crd.Source.
func Source() crd.Source { return crd.Source{Name: Name, Data: Istio()} }

// Load reads config from paths and adds the standard manifests when the config declares
// no attribute manifest of its own. Mixer merges every manifest it sees, so adding them to
// a config that has its own could only clash (the same names, defined twice).
func Load(paths ...string) (*crd.Store, error) {
	s, err := crd.Load(paths...)
	if err != nil {
		return nil, err
	}
	if len(s.AttributeManifests()) > 0 {
		return s, nil
	}
	return crd.LoadSources([]crd.Source{Source()}, paths...)
}
