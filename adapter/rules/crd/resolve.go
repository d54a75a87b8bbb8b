package crd

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// Candidates lists the keys Mixer tries, in order, for a reference to a resource of kind
// made from a resource in namespace (mixer/pkg/runtime/config/util.go, canonicalize, and
// ephemeral.go, getCanonicalRef):
//   - "h1" is h1.<kind>.<namespace>;
//   - "h1.x" is first h1.x.<namespace> (x as the kind), then h1.<kind>.x (x as the namespace);
//   - a name with exactly two dots is already a key, and so is anything with more.
func Candidates(ref, kind, namespace string) []string {
	parts := strings.Split(ref, ".")
	switch len(parts) {
	case 1:
		return []string{ref + "." + kind + "." + namespace}
	case 2:
		return []string{ref + "." + namespace, parts[0] + "." + kind + "." + parts[1]}
	}
	return []string{ref}
}

func find[T any](m map[string]*T, ref, kind, namespace string, ok func(*T) bool) (*T, string) {
	for _, key := range Candidates(ref, kind, namespace) {
		if v, found := m[key]; found && ok(v) {
			return v, key
		}
	}
	return nil, ""
}

func always[T any](*T) bool { return true }

func lookedFor(ref, kind, namespace string) string {
	return "looked for " + strings.Join(Candidates(ref, kind, namespace), ", ")
}

// AdapterOf resolves a dynamic handler's adapter from the handler's namespace. As in Mixer,
// an adapter is usable only if all its templates resolve.
func (s *Store) AdapterOf(h *Handler) (*Adapter, error) {
	if h.Static() {
		return nil, fmt.Errorf("%s: compiledAdapter %q is built into Mixer, not an adapter CR", h.describe(), h.CompiledAdapter)
	}
	a, _ := find(s.adapters, h.Adapter, KindAdapter, h.Namespace, always)
	if a == nil {
		return nil, fmt.Errorf("%s: adapter '%s' not found (%s)", h.describe(), h.Adapter, lookedFor(h.Adapter, KindAdapter, h.Namespace))
	}
	if _, err := s.TemplatesOf(a); err != nil {
		return nil, fmt.Errorf("%s: adapter '%s' is unusable: %w", h.describe(), h.Adapter, err)
	}
	return a, nil
}

// TemplatesOf resolves an adapter's templates from the adapter's namespace.
func (s *Store) TemplatesOf(a *Adapter) ([]*Template, error) {
	var out []*Template
	var errs []error
	for _, ref := range a.Templates {
		t, _ := find(s.templates, ref, KindTemplate, a.Namespace, always)
		if t == nil {
			errs = append(errs, fmt.Errorf("%s: unable to find template '%s' (%s)", a.describe(), ref, lookedFor(ref, KindTemplate, a.Namespace)))
			continue
		}
		out = append(out, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// TemplateOf resolves a dynamic instance's template from the instance's namespace, so
// "template: metric" outside istio-system needs a metric template there, or the
// reference metric.istio-system.
func (s *Store) TemplateOf(i *Instance) (*Template, error) {
	if !i.Dynamic() {
		return nil, fmt.Errorf("%s: compiledTemplate %q is built into Mixer, not a template CR", i.describe(), i.CompiledTemplate)
	}
	t, _ := find(s.templates, i.Template, KindTemplate, i.Namespace, always)
	if t == nil {
		return nil, fmt.Errorf("%s: template '%s' not found (%s)", i.describe(), i.Template, lookedFor(i.Template, KindTemplate, i.Namespace))
	}
	return t, nil
}

// ResolvedRule is a rule whose references and expressions all resolved.
type ResolvedRule struct {
	*Rule
	Match   *expr.Expr // BOOL; a constant true when the rule has no match
	Actions []*ResolvedAction
}

// ResolvedAction is a rule action with its handler and instances.
type ResolvedAction struct {
	Name      string
	Handler   *Handler
	Adapter   *Adapter // nil when the handler is static
	Instances []*ResolvedInstance
}

// ResolvedInstance is an instance ready to be built from an attribute bag. The compiled
// params are set for dynamic metric instances only; static instances keep only their raw
// params because their schema is compiled into Mixer.
type ResolvedInstance struct {
	*Instance
	Template                    *Template
	Value                       *expr.Expr
	Dimensions                  map[string]*expr.Expr
	MonitoredResourceType       *expr.Expr
	MonitoredResourceDimensions map[string]*expr.Expr
}

// Matches evaluates the rule's match condition. Mixer treats an evaluation error as no
// match and logs it (routing/table.go, InstanceGroup.Matches); the error is returned so a
// caller can do the same.
func (r *ResolvedRule) Matches(bag expr.Bag) (bool, error) {
	return r.Match.EvalBool(bag)
}

// IdentityNamespace is the namespace a request belongs to for rule scoping: the
// destination's for inbound reports, the source's for outbound ones, from
// context.reporter.kind, which defaults to inbound (runtime/dispatcher/util.go).
func IdentityNamespace(bag expr.Bag) string {
	kind := "inbound"
	if v, ok := bag.Get("context.reporter.kind"); ok {
		if s, ok := v.(string); ok {
			kind = s
		}
	}
	attr := ""
	switch kind {
	case "inbound":
		attr = "destination.namespace"
	case "outbound":
		attr = "source.namespace"
	}
	if v, ok := bag.Get(attr); ok {
		if s, ok := v.(string); ok {
			return s
		}
	}
	return ""
}

// InScope reports whether the rule applies to a request at all: rules in the default
// config namespace see every request, others only requests whose identity namespace is
// theirs (routing/table.go, GetDestinations).
func (r *Rule) InScope(bag expr.Bag, defaultNamespace string) bool {
	return r.Namespace == defaultNamespace || r.Namespace == IdentityNamespace(bag)
}

// ResolveRules resolves every rule. Like Mixer it keeps what is valid: the result holds the
// rules that resolved, the error describes all the others.
func (s *Store) ResolveRules() ([]*ResolvedRule, error) {
	manifest, err := s.Manifest()
	if err != nil {
		return nil, err
	}
	var out []*ResolvedRule
	var errs []error
	for _, r := range s.Rules() {
		rr, err := s.resolveRule(r, manifest)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, rr)
	}
	return out, errors.Join(errs...)
}

// ResolveRule resolves one rule: its match condition, handlers, adapters, instances and
// templates. Any problem fails the whole rule, where Mixer would drop only the bad parts.
func (s *Store) ResolveRule(r *Rule) (*ResolvedRule, error) {
	manifest, err := s.Manifest()
	if err != nil {
		return nil, err
	}
	return s.resolveRule(r, manifest)
}

func checkLanguage(m *Meta) error {
	if lang := m.Annotations["policy.istio.io/lang"]; lang == "CEL" || lang == "COMPAT" {
		return fmt.Errorf("%s: policy.istio.io/lang %s is not supported; only CEXL, Mixer's default, is", m.describe(), lang)
	}
	return nil
}

func (s *Store) resolveRule(r *Rule, manifest expr.Manifest) (*ResolvedRule, error) {
	if err := checkLanguage(&r.Meta); err != nil {
		return nil, err
	}
	match, err := expr.CompileCondition(r.Match, manifest)
	if err != nil {
		return nil, fmt.Errorf("%s: match: %w", r.describe(), err)
	}
	rr := &ResolvedRule{Rule: r, Match: match}
	var errs []error
	for i, a := range r.Actions {
		ra, err := s.resolveAction(r, a, manifest)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: action[%d]: %w", r.describe(), i, err))
			continue
		}
		rr.Actions = append(rr.Actions, ra)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(rr.Actions) == 0 && len(r.RequestHeaderOperations) == 0 && len(r.ResponseHeaderOperations) == 0 {
		return nil, fmt.Errorf("%s: No valid actions found in rule", r.describe())
	}
	return rr, nil
}

// resolveAction follows processRuleConfigs: a static handler (compiledAdapter) is looked
// for first, then a dynamic one; a dynamic handler sees only dynamic instances. The
// capitalised messages are Mixer's own, so they can be matched against its logs.
func (s *Store) resolveAction(r *Rule, a Action, manifest expr.Manifest) (*ResolvedAction, error) {
	h, _ := find(s.handlers, a.Handler, KindHandler, r.Namespace, (*Handler).Static)
	if h == nil {
		h, _ = find(s.handlers, a.Handler, KindHandler, r.Namespace, func(h *Handler) bool { return !h.Static() })
	}
	if h == nil {
		return nil, fmt.Errorf("Handler not found: handler='%s' (%s)", a.Handler, lookedFor(a.Handler, KindHandler, r.Namespace))
	}
	ra := &ResolvedAction{Name: a.Name, Handler: h}
	var supported []*Template
	if !h.Static() {
		adapter, err := s.AdapterOf(h)
		if err != nil {
			return nil, err
		}
		ra.Adapter = adapter
		if supported, err = s.TemplatesOf(adapter); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	var errs []error
	for _, ref := range a.Instances {
		ri, err := s.resolveInstance(ref, r.Namespace, h, supported, manifest)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[ri.Key()] {
			errs = append(errs, fmt.Errorf("action specified the same instance multiple times: instance='%s'", ri.Key()))
			continue
		}
		seen[ri.Key()] = true
		ra.Instances = append(ra.Instances, ri)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(ra.Instances) == 0 {
		return nil, errors.New("No valid instances found") //nolint:staticcheck // Mixer's own message (runtime/config/ephemeral.go), kept verbatim

	}
	return ra, nil
}

func (s *Store) resolveInstance(ref, namespace string, h *Handler, supported []*Template, manifest expr.Manifest) (*ResolvedInstance, error) {
	want := h.Static()
	inst, _ := find(s.instances, ref, KindInstance, namespace, func(i *Instance) bool { return !i.Dynamic() == want })
	if inst == nil {
		err := fmt.Errorf("Instance not found: instance='%s' (%s)", ref, lookedFor(ref, KindInstance, namespace))
		if other, _ := find(s.instances, ref, KindInstance, namespace, always); other != nil && !want {
			return nil, fmt.Errorf("%w: %s is static (compiledTemplate: %s) and cannot feed out-of-process handler '%s'; use template: instead",
				err, other.describe(), other.CompiledTemplate, h.Key())
		} else if other != nil {
			return nil, fmt.Errorf("%w: %s is dynamic (template: %s) and cannot feed static handler '%s'",
				err, other.describe(), other.Template, h.Key())
		}
		return nil, err
	}
	ri := &ResolvedInstance{Instance: inst}
	if !inst.Dynamic() {
		return ri, nil
	}
	t, err := s.TemplateOf(inst)
	if err != nil {
		return nil, err
	}
	ri.Template = t
	if !slices.Contains(supported, t) {
		return nil, fmt.Errorf("instance '%s' is of template '%s' which is not supported by handler '%s'", inst.Key(), t.Key(), h.Key())
	}
	if err := checkLanguage(&inst.Meta); err != nil {
		return nil, err
	}
	if inst.Params != nil {
		if err := ri.compile(manifest); err != nil {
			return nil, fmt.Errorf("%s: params: config does not conform to schema of template '%s': %w", inst.describe(), inst.Template, err)
		}
	}
	return ri, nil
}

func (ri *ResolvedInstance) compile(manifest expr.Manifest) error {
	p := ri.Params
	var errs []error
	compile := func(field string, v any) *expr.Expr {
		e, err := expr.CompileParam(v, manifest)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
		return e
	}
	compileMap := func(field string, m map[string]any) map[string]*expr.Expr {
		out := map[string]*expr.Expr{}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out[k] = compile(field+"."+k, m[k])
		}
		return out
	}
	if p.Value != nil {
		ri.Value = compile("value", p.Value)
	}
	ri.Dimensions = compileMap("dimensions", p.Dimensions)
	if p.MonitoredResourceType != nil {
		e := compile("monitored_resource_type", p.MonitoredResourceType)
		if e != nil && e.Type() != expr.String {
			errs = append(errs, fmt.Errorf("monitored_resource_type: expression %q has type %s, want STRING", e, e.Type()))
		}
		ri.MonitoredResourceType = e
	}
	ri.MonitoredResourceDimensions = compileMap("monitored_resource_dimensions", p.MonitoredResourceDimensions)
	return errors.Join(errs...)
}
