// Package configcheck checks a meshmetrics config offline, the way the
// adapter takes it: the Mixer CRDs that mockmixer reads (adapters,
// templates, attribute manifests, handlers, instances, rules) or a
// Mixer-less config directory. Every handler of the meshmetrics adapter
// goes through the adapter's own params validation (adapter.CheckParams:
// defaults, field rules, each backend's rules); instances, rules and
// handlers are then cross-checked for what the adapter would accept and get
// wrong (a label no dimension fills, a value no metric can count, an
// instance no rule sends). Each finding names the object, its file and
// line, and the field. `meshmetrics validate` prints them.
package configcheck

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/attrmap"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/mixerless"
	"github.com/meshmetrics/meshmetrics/adapter/rules/attributes"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
	"github.com/meshmetrics/meshmetrics/config"
)

// Severity says whether a finding makes the config wrong.
type Severity uint8

// The severities.
const (
	// Error: the adapter refuses the config, or takes it and loses or
	// empties data because of it.
	Error Severity = iota + 1
	// Warning: probably a mistake, or a check that depends on the machine
	// the adapter runs on (a credential file, an environment variable).
	Warning
)

func (s Severity) String() string {
	if s == Warning {
		return "warning"
	}
	return "error"
}

// Finding is one problem.
type Finding struct {
	Severity Severity
	// File and Line locate it (Line 0 when only the file is known; File
	// empty when nothing is).
	File string
	Line int
	// Object is the resource it is about, "handler prometheus.handler.istio-system".
	Object string
	// Field is the field at fault, as a path ("params.metrics[0].kind"),
	// when one is.
	Field   string
	Message string
}

func (f Finding) String() string {
	var b strings.Builder
	if f.File != "" {
		b.WriteString(f.File)
		if f.Line > 0 {
			b.WriteString(":" + strconv.Itoa(f.Line))
		}
		b.WriteString(": ")
	}
	b.WriteString(f.Severity.String() + ": ")
	if f.Object != "" {
		b.WriteString(f.Object + ": ")
	}
	if f.Field != "" {
		b.WriteString(f.Field + ": ")
	}
	b.WriteString(f.Message)
	return b.String()
}

// Options say what to check.
type Options struct {
	// Files are files or directories of Mixer CRDs, as mockmixer's -f. When
	// they declare no attribute manifest, Istio's standard ones are used.
	Files []string
	// ConfigDir is a Mixer-less config directory (--config-dir), with the
	// resources the adapter embeds added as it adds them.
	ConfigDir string
	// DefaultNamespace is Mixer's config default namespace (istio-system).
	DefaultNamespace string
	// MixerExact and HeaderAttributes are the access-log mapping of the
	// Mixer-less mode (--als-mixer-exact, --als-header-attributes).
	MixerExact       bool
	HeaderAttributes map[string]string
}

// Result is what a check found.
type Result struct {
	Findings []Finding
	// Handlers, LocalHandlers, Instances and Rules count what was read.
	Handlers, LocalHandlers, Instances, Rules int
	// Digests name each valid meshmetrics handler's params as a running
	// adapter's logs do (handler=<digest>), by handler key: Mixer encodes
	// params the same way every time, so the digest identifies the CR.
	Digests map[string]string

	// store is the one being checked, for lines (crd.Store.LineOf).
	store *crd.Store
}

// Errors counts the findings of severity Error.
func (r *Result) Errors() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Error {
			n++
		}
	}
	return n
}

// Check checks the config of o.
func Check(o Options) *Result {
	r := &Result{Digests: map[string]string{}}
	if o.DefaultNamespace == "" {
		o.DefaultNamespace = crd.DefaultConfigNamespace
	}
	if len(o.Files) > 0 {
		store, err := attributes.Load(o.Files...)
		if err != nil {
			r.addErrors(err)
		} else {
			r.checkStore(store)
		}
	}
	if o.ConfigDir != "" {
		store, err := mixerless.LoadStore(o.ConfigDir)
		if err != nil {
			r.addErrors(err)
		} else {
			before := r.Errors()
			r.checkStore(store)
			// What only the Mixer-less compilation sees (the access-log
			// attribute layout, header attributes); run when nothing above
			// failed, so that each problem is said once.
			if r.Errors() == before {
				if _, err := mixerless.Compile(store, mixerless.Options{Mapping: attrmap.Options{MixerExact: o.MixerExact, HeaderAttributes: o.HeaderAttributes}, DefaultNamespace: o.DefaultNamespace,
					Validate: validateAny}); err != nil {
					r.addErrors(err)
				}
			}
		}
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		return a.Line - b.Line
	})
	r.Findings = slices.Compact(r.Findings)
	return r
}

// validateAny is the check a Mixer-less config's handlers get in the
// adapter (its handler cache's Validate), with the built-in backends.
func validateAny(a handlemetric.Any) error {
	p, err := config.Decode(a.Present, a.TypeURL, a.Value)
	if err != nil {
		return err
	}
	_, err = adapter.CheckParams(p)
	return err
}

// located matches the "kind 'key' (file:line): " crd puts before a message.
var located = regexp.MustCompile(`^(\w+) '([^']+)' \((.+?):(\d+)\): (?s:(.*))$`)

// addErrors adds one finding per error of err (joined errors apart), with
// the file and line crd gave it.
func (r *Result) addErrors(err error) {
	for _, e := range split(err) {
		f := Finding{Severity: Error, Message: e.Error()}
		var le *crd.LoadError
		if errors.As(e, &le) {
			f.File, f.Line, f.Message = le.File, le.Line, le.Msg
		} else if m := located.FindStringSubmatch(f.Message); m != nil {
			f.Object, f.File, f.Message = m[1]+" "+m[2], m[3], m[5]
			f.Line, _ = strconv.Atoi(m[4])
		}
		r.Findings = append(r.Findings, f)
	}
}

// split undoes errors.Join, recursively. Only a join is split: an error
// of fmt.Errorf with two %w ("invalid handler config: ...") is one
// message, though it unwraps to two errors too.
func split(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok && reflect.TypeOf(err).String() == "*errors.joinError" {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, split(e)...)
		}
		return out
	}
	return []error{err}
}

// local is a meshmetrics handler with its normalized params.
type local struct {
	h *crd.Handler
	p *config.Params
}

func (r *Result) checkStore(store *crd.Store) {
	r.store = store
	r.Handlers += len(store.Handlers())
	r.Instances += len(store.Instances())
	r.Rules += len(store.Rules())
	manifest, err := store.Manifest()
	if err != nil {
		r.addErrors(err)
		return
	}
	rules, err := store.ResolveRules()
	allResolved := err == nil
	r.addErrors(err)
	locals := map[string]*local{}
	for _, h := range store.Handlers() {
		if l := r.checkHandler(store, h); l != nil {
			locals[h.Key()] = l
		}
	}
	usedHandlers, usedInstances := map[string]bool{}, map[string]bool{}
	sent := map[string]map[string]bool{} // handler key -> instance keys rules send it
	for _, rule := range rules {
		r.exprWarnings(rule.Meta, "match", rule.Match)
		for ai, a := range rule.Actions {
			usedHandlers[a.Handler.Key()] = true
			if sent[a.Handler.Key()] == nil {
				sent[a.Handler.Key()] = map[string]bool{}
			}
			for _, ri := range a.Instances {
				usedInstances[ri.Key()] = true
				sent[a.Handler.Key()][ri.Key()] = true
				r.instanceWarnings(ri)
				if l := locals[a.Handler.Key()]; l != nil {
					r.crossCheck(rule, ai, l, ri, manifest)
				}
			}
		}
	}
	for key, l := range locals {
		r.unfedMetrics(l, sent[key])
	}
	if !allResolved {
		return // a rule that did not resolve may use what looks unused
	}
	for _, h := range store.Handlers() {
		if !usedHandlers[h.Key()] {
			r.warn(&h.Meta, "handler "+h.Key(), "", "no rule sends instances to this handler: it is never called")
		}
	}
	for _, i := range store.Instances() {
		if !usedInstances[i.Key()] {
			r.warn(&i.Meta, "instance "+i.Key(), "", "no rule sends this instance to any handler: it is never built")
		}
	}
}

func (r *Result) warn(m *crd.Meta, object, field, msg string, path ...string) {
	r.Findings = append(r.Findings, Finding{Severity: Warning, File: m.File, Line: r.store.LineOf(m, path...), Object: object, Field: field, Message: msg})
}

func (r *Result) fail(m *crd.Meta, object, field, msg string, path ...string) {
	r.Findings = append(r.Findings, Finding{Severity: Error, File: m.File, Line: r.store.LineOf(m, path...), Object: object, Field: field, Message: msg})
}

// checkHandler checks a handler's params against its adapter: a
// meshmetrics handler through the adapter's own validation (returned for
// the cross-checks when it passes), another adapter's against its
// descriptor, as Mixer encodes them.
func (r *Result) checkHandler(store *crd.Store, h *crd.Handler) *local {
	if h.Static() {
		return nil
	}
	object := "handler " + h.Key()
	a, err := store.AdapterOf(h)
	if err != nil {
		r.fail(&h.Meta, object, "adapter", strings.TrimPrefix(err.Error(), h.Kind+" '"+h.Key()+"' ("+h.Source()+"): "), "adapter")
		return nil
	}
	schema, err := params.ParseSchema(a.Config)
	if err != nil {
		r.fail(&a.Meta, "adapter "+a.Key(), "config", err.Error(), "config")
		return nil
	}
	if schema == nil || a.SessionBased {
		return nil
	}
	cfg, err := schema.AdapterConfig(h.Params)
	if err != nil {
		field, msg := "params", err.Error()
		var pe *params.Error
		if errors.As(err, &pe) && pe.Path != "" {
			field, msg = "params."+pe.Path, pe.Msg
		}
		r.fail(&h.Meta, object, field, fmt.Sprintf("does not fit adapter %s: %s", a.Key(), msg), fieldPath(field)...)
		return nil
	}
	if !mixerless.IsLocal(a) {
		return nil
	}
	r.LocalHandlers++
	p, err := config.Decode(true, []byte(cfg.TypeUrl), cfg.Value)
	if err == nil {
		p, err = adapter.CheckParams(p)
	}
	if err != nil {
		r.paramsErrors(h, err)
		return nil
	}
	r.Digests[h.Key()] = handlerDigest(cfg.TypeUrl, cfg.Value)
	return &local{h: h, p: p}
}

// paramsErrors adds the adapter's refusal of a handler's params, one
// finding per field.
func (r *Result) paramsErrors(h *crd.Handler, err error) {
	object := "handler " + h.Key()
	var fe config.FieldErrors
	if errors.As(err, &fe) {
		for _, e := range fe {
			field := "params." + e.Field
			r.paramsFinding(h, object, field, e.Message)
		}
		return
	}
	for _, e := range split(err) {
		msg := strings.TrimPrefix(e.Error(), config.ErrInvalid.Error()+": ")
		field := fieldOf(msg)
		if m := metricIndex.FindString(msg); m != "" {
			msg = strings.Replace(msg, m+": ", "", 1) // said by the field
		}
		r.paramsFinding(h, object, field, msg)
	}
}

func (r *Result) paramsFinding(h *crd.Handler, object, field, msg string) {
	if environmental(msg) {
		r.warn(&h.Meta, object, field, msg+" (checked here; what counts is the machine the adapter runs on)", fieldPath(field)...)
		return
	}
	r.fail(&h.Meta, object, field, msg, fieldPath(field)...)
}

// environmental reports a refusal that depends on the machine the check
// runs on: a credential file or variable that exists only where the
// adapter runs.
func environmental(msg string) bool {
	for _, s := range []string{"no such file or directory", "permission denied", "is not set"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

var metricIndex = regexp.MustCompile(`\bmetrics\[\d+\]`)

// fieldOf finds the params field a backend's message is about:
// "prometheus.remote_write: bearer_token_file: ..." or "prometheus:
// metrics[0]: ...".
func fieldOf(msg string) string {
	if m := metricIndex.FindString(msg); m != "" {
		return "params." + m
	}
	parts := strings.Split(msg, ": ")
	var field []string
	for _, p := range parts[:len(parts)-1] {
		if strings.ContainsAny(p, " \"'") {
			break
		}
		field = append(field, p)
	}
	if len(field) == 0 {
		return "params"
	}
	return "params." + strings.Join(field, ".")
}

// fieldPath turns "params.metrics[0].label_names[2]" into the keys of
// crd.Store.LineOf.
func fieldPath(field string) []string {
	var out []string
	for _, p := range strings.Split(field, ".") {
		name, idx, ok := strings.Cut(p, "[")
		out = append(out, name)
		if ok {
			out = append(out, strings.TrimSuffix(idx, "]"))
		}
	}
	return out
}

// exprWarnings adds the forms a real Mixer rejects.
func (r *Result) exprWarnings(m crd.Meta, field string, e *expr.Expr) {
	if e == nil {
		return
	}
	for _, w := range e.Warnings() {
		r.warn(&m, m.Kind+" "+m.Key(), field, w, fieldPath(field)...)
	}
}

func (r *Result) instanceWarnings(ri *crd.ResolvedInstance) {
	r.exprWarnings(ri.Meta, "params.value", ri.Value)
	for _, k := range slices.Sorted(mapKeys(ri.Dimensions)) {
		r.exprWarnings(ri.Meta, "params.dimensions."+k, ri.Dimensions[k])
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// metricsOf are the metrics of p an instance feeds, with their indexes, as
// the handler looks them up: by the fully qualified name, then by the
// short name.
func metricsOf(p *config.Params, instance string) []int {
	var out []int
	for _, name := range []string{instance, config.ShortInstanceName(instance)} {
		for i, m := range p.Metrics {
			if m.InstanceName == name {
				out = append(out, i)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// crossCheck checks an instance a rule sends to a meshmetrics handler
// against the handler's metrics.
func (r *Result) crossCheck(rule *crd.ResolvedRule, action int, l *local, ri *crd.ResolvedInstance, manifest expr.Manifest) {
	p, h := l.p, l.h
	if len(p.Metrics) == 0 {
		return // implicit metrics: every dimension is a label
	}
	idx := metricsOf(p, ri.Key())
	if len(idx) == 0 {
		r.fail(&rule.Meta, "rule "+rule.Key(), fmt.Sprintf("actions[%d]", action), fmt.Sprintf(
			"sends instance %s to handler %s (%s), but no metric of the handler has instance_name %s or %s: the adapter refuses every such instance (unknown_instance)",
			ri.Key(), h.Key(), h.Source(), ri.Key(), config.ShortInstanceName(ri.Key())), "actions", strconv.Itoa(action))
		return
	}
	for _, mi := range idx {
		m := p.Metrics[mi]
		where := fmt.Sprintf("params.metrics[%d]", mi)
		for li, label := range m.LabelNames {
			if _, ok := ri.Dimensions[label]; ok {
				continue
			}
			field := fmt.Sprintf("%s.label_names[%d]", where, li)
			msg := fmt.Sprintf("label %q of metric %s is not a dimension of instance %s (%s): every series gets %s=\"\"", label, m.Name, ri.Key(), ri.Source(), label)
			if best := closest(label, ri.Dimensions); best != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", best)
			}
			r.fail(&h.Meta, "handler "+h.Key(), field, msg, fieldPath(field)...)
		}
		r.checkValue(h, where, m, ri)
	}
}

// checkValue checks that the instance's value can be the metric's number
// (adapter/internal/handler/convert: numbers, bools, durations and
// timestamps are; text only when it reads as a number).
func (r *Result) checkValue(h *crd.Handler, where string, m *config.Params_MetricInfo, ri *crd.ResolvedInstance) {
	object := "instance " + ri.Key()
	if ri.Value == nil {
		r.fail(&ri.Meta, object, "params.value", fmt.Sprintf("missing: metric %s of handler %s (%s) needs a value; the adapter refuses every instance (missing_value)",
			m.Name, h.Key(), h.Source()), "params")
		return
	}
	switch t := ri.Value.Type(); t {
	case expr.Int64, expr.Double, expr.Bool, expr.Duration, expr.Timestamp:
	case expr.String:
		r.warn(&ri.Meta, object, "params.value", fmt.Sprintf("%q is a STRING: metric %s (%s) of handler %s counts it only when the text is a number, else the adapter refuses the instance (not_numeric)",
			ri.Value.String(), m.Name, m.Kind, h.Key()), "params", "value")
	default:
		r.fail(&ri.Meta, object, "params.value", fmt.Sprintf("%q is %s %s, which no metric can count: metric %s (%s) of handler %s (%s, %s) refuses every instance (not_numeric)",
			ri.Value.String(), article(t), t, m.Name, m.Kind, h.Key(), h.Source(), where), "params", "value")
	}
}

func article(t expr.ValueType) string {
	if strings.ContainsRune("AEIOU", rune(t.String()[0])) {
		return "an"
	}
	return "a"
}

// unfedMetrics warns about metrics of a handler that no rule sends their
// instance to.
func (r *Result) unfedMetrics(l *local, sent map[string]bool) {
	for i, m := range l.p.Metrics {
		fed := false
		for inst := range sent {
			if m.InstanceName == inst || m.InstanceName == config.ShortInstanceName(inst) {
				fed = true
			}
		}
		if !fed {
			field := fmt.Sprintf("params.metrics[%d].instance_name", i)
			r.warn(&l.h.Meta, "handler "+l.h.Key(), field, fmt.Sprintf("no rule sends instance %s to this handler: metric %s stays empty", m.InstanceName, m.Name), fieldPath(field)...)
		}
	}
}

// closest is the dimension nearest to a label name (see expr.Closest).
func closest(name string, dims map[string]*expr.Expr) string {
	m := expr.Manifest{}
	for k := range dims {
		m[k] = expr.String
	}
	return expr.Closest(name, m)
}

// handlerDigest names the adapter_config of a meshmetrics handler as the
// adapter's logs do (the first bytes of its digest), so that a refusal
// logged by a running adapter can be traced to its handler.
func handlerDigest(cfgTypeURL string, value []byte) string {
	return handler.DigestOf(handlemetric.Any{Present: true, TypeURL: []byte(cfgTypeURL), Value: value}).String()
}
