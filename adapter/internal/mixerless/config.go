// Package mixerless runs Mixer's rules in the adapter: it loads a config
// directory (handlers, instances and rules, with Istio's attribute
// manifests and meshmetrics' adapter and metric template embedded),
// compiles every expression against the access-log attribute layout, and
// for each StreamAccessLogsMessage builds one bag per entry, matches the
// rules, builds their instances and dispatches them: straight into the
// handler pipeline for meshmetrics handlers, and asynchronously over gRPC,
// as Mixer would, for handlers of other out-of-process adapters. A new
// config replaces the old one only once it is valid as a whole.
package mixerless

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/attrmap"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/rules/attributes"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/dispatch"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
	"github.com/meshmetrics/meshmetrics/config"
)

// The meshmetrics adapter and metric template CRs, copies of
// deploy/kubernetes's (TestEmbeddedCRsMatchDeploy keeps them equal).
var (
	//go:embed adapter.yaml
	adapterCR []byte
	//go:embed template-metric.yaml
	templateCR []byte
)

// embedded are the resources a config directory may leave out, by key.
func embedded() map[string]crd.Source {
	return map[string]crd.Source{
		"istioproxy.attributemanifest.istio-system": attributes.Source(),
		"kubernetes.attributemanifest.istio-system": attributes.Source(),
		"envoyals.attributemanifest.istio-system":   {Name: "<embedded access-log attributes>", Data: []byte(attrmap.ExtensionManifest)},
		"meshmetrics.adapter.istio-system":          {Name: "<embedded meshmetrics adapter>", Data: adapterCR},
		"metric.template.istio-system":              {Name: "<embedded metric template>", Data: templateCR},
	}
}

// LoadStore reads dir (recursively, *.yaml and *.yml) and adds each embedded
// resource the directory does not define itself.
func LoadStore(dir string) (*crd.Store, error) {
	if dir == "" {
		return nil, errors.New("no config directory")
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, err
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	own, err := crd.Load(dir)
	if err != nil {
		return nil, err
	}
	defined := map[string]bool{}
	for _, m := range own.AttributeManifests() {
		defined[m.Key()] = true
	}
	for _, a := range own.Adapters() {
		defined[a.Key()] = true
	}
	for _, t := range own.Templates() {
		defined[t.Key()] = true
	}
	var add []crd.Source
	seen := map[string]bool{}
	keys := []string{}
	for k := range embedded() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		src := embedded()[k]
		if defined[k] || seen[src.Name] {
			continue
		}
		// Istio's two manifests come from one file: add it when neither is defined.
		if src.Name == attributes.Name && (defined["istioproxy.attributemanifest.istio-system"] || defined["kubernetes.attributemanifest.istio-system"]) {
			continue
		}
		seen[src.Name] = true
		add = append(add, src)
	}
	return crd.LoadSources(add, dir)
}

// Config is one loaded, validated and compiled config directory. It is
// immutable; each message is processed by one Config from start to end.
type Config struct {
	store    *crd.Store
	mapper   *attrmap.Mapper
	rules    []*rule
	local    []*localHandler
	remote   []*remoteHandler
	dispatch *dispatch.Dispatcher
	// warnings are the expression forms a real Mixer rejects, with file:line.
	warnings []string

	kindSlot, destNSSlot, srcNSSlot int
	defaultNamespace                string
	need                            logentry.Need
}

// neededAttributes are the attributes rules read: their matches, their
// instances' params, and what rule scoping reads.
func neededAttributes(rules []*crd.ResolvedRule) map[string]bool {
	out := map[string]bool{"context.reporter.kind": true, "destination.namespace": true, "source.namespace": true}
	add := func(e *expr.Expr) {
		if e == nil {
			return
		}
		for _, a := range e.Attributes() {
			out[a] = true
		}
	}
	for _, r := range rules {
		add(r.Match)
		for _, a := range r.Actions {
			for _, ri := range a.Instances {
				add(ri.Value)
				add(ri.MonitoredResourceType)
				for _, e := range ri.Dimensions {
					add(e)
				}
				for _, e := range ri.MonitoredResourceDimensions {
					add(e)
				}
			}
		}
	}
	return out
}

type rule struct {
	key       string
	namespace string
	match     *expr.Program
	actions   []action
}

type action struct {
	local     *localHandler  // set for meshmetrics handlers
	remote    *remoteHandler // set for other adapters
	instances []*instance
}

type instance struct {
	ri    *crd.ResolvedInstance
	name  []byte
	value *expr.Program
	dims  []dimension
}

type dimension struct {
	key []byte
	p   *expr.Program
	// emit: a metric of the handler has this dimension as a label. A
	// dimension not emitted is still evaluated unless it is infallible, so
	// that its failure drops the instance as in Mixer.
	emit, eval bool
}

// localHandler is a meshmetrics handler: its params encoded as Mixer sends
// them, served by the handler cache like a HandleMetric call's.
type localHandler struct {
	key    string
	source string // file:line of the handler CR
	any    handlemetric.Any
	digest handler.Digest
	index  int
	params *config.Params
}

// labels are the label names of the metrics an instance feeds in h, as
// the handler looks them up (fully qualified name, then short name), and
// the label order of the first of them; nil when every dimension is used (a
// config without metrics, or an instance no metric names, which the handler
// refuses whole).
func (h *localHandler) labels(instance string) (map[string]bool, []string) {
	if len(h.params.Metrics) == 0 {
		return nil, nil
	}
	find := func(name string) (map[string]bool, []string) {
		var out map[string]bool
		var order []string
		for _, m := range h.params.Metrics {
			if m.InstanceName == name {
				if out == nil {
					out, order = map[string]bool{}, m.LabelNames
				}
				for _, l := range m.LabelNames {
					out[l] = true
				}
			}
		}
		return out, order
	}
	if l, order := find(instance); l != nil {
		return l, order
	}
	return find(config.ShortInstanceName(instance))
}

// remoteHandler is a handler of another out-of-process adapter.
type remoteHandler struct {
	key   string
	h     *dispatch.Handler
	index int
}

// Options configure the compiled config.
type Options struct {
	Mapping attrmap.Options
	// DefaultNamespace is Mixer's --configDefaultNamespace (istio-system).
	DefaultNamespace string
	// Validate checks a meshmetrics handler's params as a HandleMetric call's
	// would be (decode, normalise, sink rules).
	Validate func(handlemetric.Any) error
	// Dispatch configures the connections to other adapters.
	Dispatch dispatch.Options
}

// IsLocal reports whether an adapter CR is meshmetrics': its params are
// meshmetrics' config.Params (or the seed Librato adapter's, which
// meshmetrics also serves).
func IsLocal(a *crd.Adapter) bool {
	if a == nil || a.SessionBased {
		return false
	}
	s, err := params.ParseSchema(a.Config)
	if err != nil || s == nil {
		return false
	}
	url := s.TypeURL()
	return url == config.TypeURL || url == config.LegacyLibratoTypeURL
}

// Compile resolves and compiles a store. Any problem anywhere fails the
// whole config, with every problem listed and each located by file:line.
func Compile(store *crd.Store, o Options) (*Config, error) {
	if o.DefaultNamespace == "" {
		o.DefaultNamespace = crd.DefaultConfigNamespace
	}
	manifest, err := store.Manifest()
	if err != nil {
		return nil, err
	}
	layout := expr.NewLayout(manifest)
	c := &Config{store: store, defaultNamespace: o.DefaultNamespace}
	c.kindSlot = slotOr(layout, "context.reporter.kind", expr.String)
	c.destNSSlot = slotOr(layout, "destination.namespace", expr.String)
	c.srcNSSlot = slotOr(layout, "source.namespace", expr.String)
	dopts := o.Dispatch
	dopts.DefaultNamespace = o.DefaultNamespace
	dopts.InProcess = func(a *crd.ResolvedAction) bool { return IsLocal(a.Adapter) }
	if c.dispatch, err = dispatch.New(store, dopts); err != nil {
		return nil, err
	}
	// Bags hold only what the config reads, and entries are read only as
	// far as those attributes need.
	mapping := o.Mapping
	mapping.Needed = neededAttributes(c.dispatch.Rules())
	for _, a := range o.Mapping.HeaderAttributes {
		mapping.Needed[a] = true
	}
	if c.mapper, err = attrmap.New(layout, mapping); err != nil {
		return nil, err
	}
	c.need = c.mapper.Need()
	c.warnings = c.dispatch.Warnings()
	locals := map[string]*localHandler{}
	remotes := map[string]*remoteHandler{}
	var errs []error
	for _, r := range c.dispatch.Rules() {
		cr := &rule{key: r.Key(), namespace: r.Namespace}
		if cr.match, err = r.Match.Program(layout); err != nil {
			errs = append(errs, fmt.Errorf("rule %s (%s): match: %w", r.Key(), r.Source(), err))
			continue
		}
		for _, a := range r.Actions {
			if a.Adapter == nil {
				continue // compiled into Mixer (compiledAdapter): nothing to call
			}
			var act action
			key := a.Handler.Key()
			if IsLocal(a.Adapter) {
				lh := locals[key]
				if lh == nil {
					if lh, err = newLocal(a, o.Validate); err != nil {
						errs = append(errs, err)
						continue
					}
					lh.index = len(c.local)
					locals[key] = lh
					c.local = append(c.local, lh)
				}
				act.local = lh
			} else {
				rh := remotes[key]
				if rh == nil {
					rh = &remoteHandler{key: key, h: c.dispatch.Handler(key), index: len(c.remote)}
					remotes[key] = rh
					c.remote = append(c.remote, rh)
				}
				act.remote = rh
			}
			for _, ri := range a.Instances {
				var used map[string]bool
				var order []string
				if act.local != nil {
					used, order = act.local.labels(ri.Key())
				}
				in, err := compileInstance(ri, layout, used, order)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				act.instances = append(act.instances, in)
			}
			cr.actions = append(cr.actions, act)
		}
		c.rules = append(c.rules, cr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func slotOr(l *expr.Layout, name string, t expr.ValueType) int {
	if s, ok := l.Slot(name); ok && l.Type(s) == t {
		return s
	}
	return -1
}

func newLocal(a *crd.ResolvedAction, validate func(handlemetric.Any) error) (*localHandler, error) {
	h := a.Handler
	schema, err := params.ParseSchema(a.Adapter.Config)
	if err != nil {
		return nil, fmt.Errorf("adapter %s (%s): %w", a.Adapter.Key(), a.Adapter.Source(), err)
	}
	cfg, err := schema.AdapterConfig(h.Params)
	if err != nil {
		return nil, fmt.Errorf("handler %s (%s): params do not fit adapter %s: %w", h.Key(), h.Source(), a.Adapter.Key(), err)
	}
	adapterConfig := handlemetric.Any{Present: true, TypeURL: []byte(cfg.TypeUrl), Value: cfg.Value}
	if validate != nil {
		if err := validate(adapterConfig); err != nil {
			return nil, fmt.Errorf("handler %s (%s): %w", h.Key(), h.Source(), err)
		}
	}
	p, err := config.Decode(true, adapterConfig.TypeURL, adapterConfig.Value)
	if err == nil {
		p, err = config.Normalize(p)
	}
	if err != nil {
		return nil, fmt.Errorf("handler %s (%s): %w", h.Key(), h.Source(), err)
	}
	return &localHandler{key: h.Key(), source: h.Source(), any: adapterConfig, digest: handler.DigestOf(adapterConfig), params: p}, nil
}

func compileInstance(ri *crd.ResolvedInstance, l *expr.Layout, used map[string]bool, order []string) (*instance, error) {
	in := &instance{ri: ri, name: []byte(ri.Key())}
	fail := func(field string, err error) error {
		return fmt.Errorf("instance %s (%s): %s: %w", ri.Key(), ri.Source(), field, err)
	}
	var err error
	if ri.Value != nil {
		if in.value, err = ri.Value.Program(l); err != nil {
			return nil, fail("value", err)
		}
	}
	// Dimensions the handler's metric uses come first, in its label order,
	// so that the handler finds each label by position; the others follow
	// in name order.
	keys := make([]string, 0, len(ri.Dimensions))
	for _, k := range order {
		if _, ok := ri.Dimensions[k]; ok && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	rest := make([]string, 0, len(ri.Dimensions))
	for k := range ri.Dimensions {
		if !slices.Contains(keys, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	keys = append(keys, rest...)
	for _, k := range keys {
		p, err := ri.Dimensions[k].Program(l)
		if err != nil {
			return nil, fail("dimensions."+k, err)
		}
		emit := used == nil || used[k]
		in.dims = append(in.dims, dimension{key: []byte(k), p: p, emit: emit, eval: emit || !ri.Dimensions[k].Infallible()})
	}
	return in, nil
}

// Handlers lists the handler keys of the config, local ones first.
func (c *Config) Handlers() (local, remote []string) {
	for _, h := range c.local {
		local = append(local, h.key)
	}
	for _, h := range c.remote {
		remote = append(remote, h.key)
	}
	return local, remote
}

// Summary describes the config for logs and /readyz.
func (c *Config) Summary() string {
	local, remote := c.Handlers()
	return fmt.Sprintf("%d rules, %d meshmetrics handlers [%s], %d forwarded handlers [%s]",
		len(c.rules), len(local), strings.Join(local, " "), len(remote), strings.Join(remote, " "))
}

// Warnings are the expression forms a real Mixer rejects.
func (c *Config) Warnings() []string { return slices.Clone(c.warnings) }

// Close closes the connections to other adapters.
func (c *Config) Close() error { return c.dispatch.Close() }
