// Package mixertest lets Go tests play Mixer against meshmetrics: load handler, instance and
// rule CRDs, send attribute bags as Mixer would, and check what a sink or /metrics got.
//
// A test starts an adapter in-process (StartAdapter) or takes the address of one, loads its
// config with NewMixer, and sends bags:
//
//	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
//	m := mixertest.NewMixer(t, mixertest.MixerOptions{Address: a.GRPCAddr(),
//		Config: []string{"deploy/kubernetes/adapter.yaml", "deploy/kubernetes/template-metric.yaml", "my-config/"}})
//	m.Report(m.Bag(t, map[string]any{"request.path": "/v1/damage?analytic=1", "response.code": 200})).RequireOK(t)
//	got := a.Recorded(t).Series()
//
// Bags go through the same rule, expression and encoding code as `mockmixer report`.
package mixertest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/rules/attributes"
	"github.com/meshmetrics/meshmetrics/adapter/rules/bag"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/dispatch"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// MixerOptions configure a Mixer.
type MixerOptions struct {
	// Config lists CRD files and directories (attributemanifest, template, adapter, handler,
	// instance, rule). When none declares an attribute manifest, Istio's standard ones are
	// added.
	Config []string
	// Sources are more CRDs held in memory.
	Sources []crd.Source
	// Address, when set, replaces every handler's connection.address: point cluster config
	// at the adapter under test.
	Address string
	// DefaultNamespace is Mixer's default config namespace (istio-system).
	DefaultNamespace string
	// Timeout bounds each Report (default 10s), as the proxy's deadline bounds Mixer's calls.
	Timeout time.Duration
	// Dispatch sets the remaining dispatch options (Seed, DedupSeed, TLS roots...);
	// Address and DefaultNamespace above take precedence.
	Dispatch dispatch.Options
}

// Mixer is a mock Mixer bound to a test.
type Mixer struct {
	d       *dispatch.Dispatcher
	timeout time.Duration
}

// NewMixer loads and resolves the config, failing the test on any problem. Warnings about
// forms a real Mixer rejects are logged with t.Log. Connections close when the test ends.
func NewMixer(t testing.TB, o MixerOptions) *Mixer {
	t.Helper()
	m, err := newMixer(o)
	if err != nil {
		t.Fatalf("mixertest: %v", err)
	}
	for _, w := range m.d.Warnings() {
		t.Logf("mixertest: warning: %s", w)
	}
	t.Cleanup(func() { _ = m.d.Close() })
	return m
}

func newMixer(o MixerOptions) (*Mixer, error) {
	store, err := loadStore(o.Sources, o.Config)
	if err != nil {
		return nil, err
	}
	do := o.Dispatch
	if o.Address != "" {
		do.Address = o.Address
	}
	if o.DefaultNamespace != "" {
		do.DefaultNamespace = o.DefaultNamespace
	}
	d, err := dispatch.New(store, do)
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	return &Mixer{d: d, timeout: timeout}, nil
}

func loadStore(sources []crd.Source, paths []string) (*crd.Store, error) {
	s, err := crd.LoadSources(sources, paths...)
	if err != nil {
		return nil, err
	}
	if len(s.AttributeManifests()) == 0 {
		return crd.LoadSources(append([]crd.Source{attributes.Source()}, sources...), paths...)
	}
	return s, nil
}

// Dispatcher is the underlying dispatcher, for what the helpers do not cover.
func (m *Mixer) Dispatcher() *dispatch.Dispatcher { return m.d }

// Bag makes an attribute bag from plain Go values, converted and checked against the
// manifests: Go ints become int64, IP addresses may be given as text, and an unknown
// attribute or a value of the wrong type fails the test.
func (m *Mixer) Bag(t testing.TB, attrs map[string]any) expr.MapBag {
	t.Helper()
	b, err := m.bag(attrs)
	if err != nil {
		t.Fatalf("mixertest: %v", err)
	}
	return b
}

func (m *Mixer) bag(attrs map[string]any) (expr.MapBag, error) {
	b := expr.MapBag{}
	for k, v := range attrs {
		switch x := v.(type) {
		case int:
			b[k] = int64(x)
		case int32:
			b[k] = int64(x)
		case float32:
			b[k] = float64(x)
		default:
			b[k] = v
		}
	}
	return b, bag.Check(b, m.d.Manifest(), nil)
}

// BagsFromFile reads bags from a YAML or JSON file, as `mockmixer report --attributes-file`.
func (m *Mixer) BagsFromFile(t testing.TB, path string) []expr.MapBag {
	t.Helper()
	bs, err := bag.ReadFile(path, m.d.Manifest())
	if err != nil {
		t.Fatalf("mixertest: %v", err)
	}
	return bs
}

// Report is the outcome of one Mixer Report.
type Report struct {
	*dispatch.Report
	// Results are the HandleMetric calls made, one per handler.
	Results []*dispatch.Result
}

// Err joins what would fail the proxy's Report: instances that could not be built and
// calls that failed.
func (r *Report) Err() error {
	errs := append([]error(nil), r.Errors...)
	for _, res := range r.Results {
		if res.Err != nil {
			errs = append(errs, fmt.Errorf("handler %s at %s: %w", res.Call.Handler.Key(), res.Call.Handler.Address, res.Err))
		}
	}
	return errors.Join(errs...)
}

// RequireOK fails the test when Err is not nil.
func (r *Report) RequireOK(t testing.TB) *Report {
	t.Helper()
	if err := r.Err(); err != nil {
		t.Fatalf("mixertest: report failed: %v", err)
	}
	return r
}

// Matched counts the bags that matched at least one rule.
func (r *Report) Matched() int {
	n := 0
	for _, b := range r.Bags {
		if len(b.Matched) > 0 {
			n++
		}
	}
	return n
}

// Report sends bags as one Mixer Report: every bag is evaluated against every rule, and
// each handler gets one HandleMetric call with all its instances.
func (m *Mixer) Report(bags ...expr.MapBag) *Report {
	in := make([]expr.Bag, len(bags))
	for i, b := range bags {
		in[i] = b
	}
	rep := &Report{Report: m.d.Build(in)}
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	rep.Results = m.d.SendAll(ctx, rep.Calls)
	return rep
}

// ReportEach sends each bag as its own Report, as a proxy that does not batch would.
func (m *Mixer) ReportEach(bags ...expr.MapBag) []*Report {
	out := make([]*Report, len(bags))
	for i, b := range bags {
		out[i] = m.Report(b)
	}
	return out
}

// RepoRoot is the root of the meshmetrics module, found from this file, so tests in any
// package can name deploy/ and testdata/ files.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// MeshmetricsCRs are the adapter and metric template CRs meshmetrics ships
// (deploy/kubernetes/adapter.yaml and template-metric.yaml), which every config for it needs.
func MeshmetricsCRs() []string {
	root := RepoRoot()
	return []string{filepath.Join(root, "deploy", "kubernetes", "adapter.yaml"), filepath.Join(root, "deploy", "kubernetes", "template-metric.yaml")}
}
