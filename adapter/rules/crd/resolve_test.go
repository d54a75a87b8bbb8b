package crd

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

func TestCandidates(t *testing.T) {
	tests := []struct {
		ref, kind, ns string
		want          []string
	}{
		{"h1", KindHandler, "default", []string{"h1.handler.default"}},
		{"h1.istio-system", KindHandler, "default", []string{"h1.istio-system.default", "h1.handler.istio-system"}},
		{"h1.handler", KindHandler, "default", []string{"h1.handler.default", "h1.handler.handler"}},
		{"h1.handler.istio-system", KindHandler, "default", []string{"h1.handler.istio-system"}},
		{"metric", KindTemplate, "tenant", []string{"metric.template.tenant"}},
		{"a.b.c.d", KindInstance, "ns", []string{"a.b.c.d"}},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			require.Equal(t, tt.want, Candidates(tt.ref, tt.kind, tt.ns))
		})
	}
}

func loadValid(t *testing.T, extra ...string) *Store {
	t.Helper()
	s, err := Load(append([]string{"testdata/valid"}, extra...)...)
	require.NoError(t, err)
	return s
}

func ruleByKey(t *testing.T, s *Store, key string) *Rule {
	t.Helper()
	for _, r := range s.Rules() {
		if r.Key() == key {
			return r
		}
	}
	t.Fatalf("no rule %s", key)
	return nil
}

func TestResolveRules(t *testing.T) {
	s := loadValid(t)
	rules, err := s.ResolveRules()
	require.NoError(t, err)
	require.Equal(t, []string{"promhttp.rule.istio-system", "r1.rule.istio-system", "tenantrule.rule.tenant"}, keys(rules))

	prom, r1, tenant := rules[0], rules[1], rules[2]

	t.Run("dynamic handler", func(t *testing.T) {
		require.Len(t, r1.Actions, 1)
		a := r1.Actions[0]
		require.Equal(t, "a1", a.Name)
		require.Equal(t, "h1.handler.istio-system", a.Handler.Key(), "h1.istio-system is read as name.namespace")
		require.Equal(t, "meshmetrics.adapter.istio-system", a.Adapter.Key())
		require.Len(t, a.Instances, 1)
		i := a.Instances[0]
		require.Equal(t, "i1metric.instance.istio-system", i.Key())
		require.Equal(t, "metric.template.istio-system", i.Template.Key())

		require.Equal(t, expr.Int64, i.Value.Type())
		types := map[string]expr.ValueType{}
		for k, e := range i.Dimensions {
			types[k] = e.Type()
		}
		require.Equal(t, map[string]expr.ValueType{
			"response_code": expr.Int64,
			"path":          expr.String,
			"agent":         expr.String,
			"source":        expr.String,
			"one":           expr.Double,
			"secure":        expr.Bool,
		}, types)
		require.Equal(t, expr.String, i.MonitoredResourceType.Type())
		require.Empty(t, i.MonitoredResourceDimensions)

		bag := expr.MapBag{"request.size": int64(1235), "request.headers": map[string]string{}}
		v, err := i.Value.Eval(bag)
		require.NoError(t, err)
		require.Equal(t, int64(1235), v)
		v, err = i.Dimensions["agent"].Eval(bag)
		require.NoError(t, err)
		require.Equal(t, "none", v)
		v, err = i.Dimensions["source"].Eval(bag)
		require.NoError(t, err)
		require.Equal(t, "mesh", v)
		v, err = i.MonitoredResourceType.Eval(bag)
		require.NoError(t, err)
		require.Equal(t, "UNSPECIFIED", v)
	})

	t.Run("static handler", func(t *testing.T) {
		require.Len(t, prom.Actions, 1)
		a := prom.Actions[0]
		require.True(t, a.Handler.Static())
		require.Nil(t, a.Adapter)
		require.Len(t, a.Instances, 1)
		require.Equal(t, "requestcount.instance.istio-system", a.Instances[0].Key())
		require.Nil(t, a.Instances[0].Template)
		require.Nil(t, a.Instances[0].Value, "static instances keep raw params only")
		ok, err := prom.Matches(expr.MapBag{})
		require.NoError(t, err)
		require.True(t, ok, "an empty match always matches")
	})

	t.Run("references across namespaces", func(t *testing.T) {
		require.Len(t, tenant.Actions, 2)
		require.Equal(t, "h2.handler.tenant", tenant.Actions[0].Handler.Key())
		require.Equal(t, "meshmetrics.adapter.istio-system", tenant.Actions[0].Adapter.Key())
		require.Equal(t, "tenantsize.instance.tenant", tenant.Actions[0].Instances[0].Key(), "tenantsize.instance is read as name.kind")
		require.Equal(t, "metric.template.istio-system", tenant.Actions[0].Instances[0].Template.Key())
		require.Equal(t, "h1.handler.istio-system", tenant.Actions[1].Handler.Key())
		require.Equal(t, "tenantsize.instance.tenant", tenant.Actions[1].Instances[0].Key(), "tenantsize.tenant is read as name.namespace")
		require.Equal(t, expr.Int64, tenant.Actions[0].Instances[0].Value.Type())
		require.Contains(t, tenant.Actions[0].Instances[0].MonitoredResourceDimensions, "ns")
	})
}

func TestResolveRuleErrors(t *testing.T) {
	s := loadValid(t, "testdata/broken/rules.yaml", "testdata/broken/references.yaml")
	tests := []struct {
		rule string
		want string
	}{
		{"nohandler.rule.istio-system", `rule 'nohandler.rule.istio-system' (testdata/broken/rules.yaml:2): action[0]: Handler not found: handler='nosuch' (looked for nosuch.handler.istio-system)`},
		{"noinstance.rule.istio-system", `rule 'noinstance.rule.istio-system' (testdata/broken/rules.yaml:12): action[0]: Instance not found: instance='nosuch.istio-system' (looked for nosuch.istio-system.istio-system, nosuch.instance.istio-system)`},
		{"staticinstance.rule.istio-system", `rule 'staticinstance.rule.istio-system' (testdata/broken/rules.yaml:22): action[0]: Instance not found: instance='requestcount' (looked for requestcount.instance.istio-system): instance 'requestcount.instance.istio-system' (testdata/valid/config.yaml:61) is static (compiledTemplate: metric) and cannot feed out-of-process handler 'h1.handler.istio-system'; use template: instead`},
		{"dynamictostatic.rule.istio-system", `rule 'dynamictostatic.rule.istio-system' (testdata/broken/rules.yaml:32): action[0]: Instance not found: instance='i1metric' (looked for i1metric.instance.istio-system): instance 'i1metric.instance.istio-system' (testdata/valid/config.yaml:23) is dynamic (template: metric) and cannot feed static handler 'prometheus.handler.istio-system'`},
		{"badmatch.rule.istio-system", `rule 'badmatch.rule.istio-system' (testdata/broken/rules.yaml:42): match: expression "request.size == \"a\"": type mismatch: INT64 == STRING (position 14)`},
		{"notbool.rule.istio-system", `rule 'notbool.rule.istio-system' (testdata/broken/rules.yaml:53): match: expression "request.path": evaluated to type STRING, expected type BOOL`},
		{"dupinstance.rule.istio-system", `rule 'dupinstance.rule.istio-system' (testdata/broken/rules.yaml:64): action[0]: action specified the same instance multiple times: instance='i1metric.instance.istio-system'`},
		{"noactions.rule.istio-system", `rule 'noactions.rule.istio-system' (testdata/broken/rules.yaml:74): No valid actions found in rule`},
		{"cel.rule.istio-system", `rule 'cel.rule.istio-system' (testdata/broken/rules.yaml:82): policy.istio.io/lang CEL is not supported; only CEXL, Mixer's default, is`},
		{"emptyinstances.rule.istio-system", `rule 'emptyinstances.rule.istio-system' (testdata/broken/rules.yaml:94): action[0]: No valid instances found`},
		{"orphanrule.rule.istio-system", `rule 'orphanrule.rule.istio-system' (testdata/broken/references.yaml:67): action[0]: handler 'orphan.handler.istio-system' (testdata/broken/references.yaml:2): adapter 'nosuch' not found (looked for nosuch.adapter.istio-system)`},
		{"brokenrule.rule.istio-system", `rule 'brokenrule.rule.istio-system' (testdata/broken/references.yaml:77): action[0]: handler 'usesbroken.handler.istio-system' (testdata/broken/references.yaml:19): adapter 'broken' is unusable: adapter 'broken.adapter.istio-system' (testdata/broken/references.yaml:10): unable to find template 'logentry' (looked for logentry.template.istio-system)`},
		{"otherrule.rule.other", `rule 'otherrule.rule.other' (testdata/broken/references.yaml:87): action[0]: instance 'othermetric.instance.other' (testdata/broken/references.yaml:27): template 'metric' not found (looked for metric.template.other)`},
		{"m2rule.rule.istio-system", `rule 'm2rule.rule.istio-system' (testdata/broken/references.yaml:97): action[0]: instance 'm2.instance.istio-system' is of template 'metric2.template.istio-system' which is not supported by handler 'h1.handler.istio-system'`},
		{"badparamsrule.rule.istio-system", `rule 'badparamsrule.rule.istio-system' (testdata/broken/references.yaml:107): action[0]: instance 'badparams.instance.istio-system' (testdata/broken/references.yaml:53): params: config does not conform to schema of template 'metric': ` +
			`value: expression "request.size | \"x\"": type mismatch: INT64 | STRING (position 14)` + "\n" +
			`dimensions.map: expression "request.headers": unsupported type: STRING_MAP cannot be sent as an istio.policy.v1beta1.Value` + "\n" +
			`dimensions.unknown: expression "nosuch.attribute": unknown attribute 'nosuch.attribute' (position 1)` + "\n" +
			`monitored_resource_type: expression "request.size" has type INT64, want STRING`},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			rr, err := s.ResolveRule(ruleByKey(t, s, tt.rule))
			require.Nil(t, rr)
			require.EqualError(t, err, tt.want)
		})
	}

	t.Run("ResolveRules keeps the valid rules", func(t *testing.T) {
		rules, err := s.ResolveRules()
		require.Equal(t, []string{"promhttp.rule.istio-system", "r1.rule.istio-system", "tenantrule.rule.tenant"}, keys(rules))
		require.Error(t, err)
		for _, tt := range tests {
			require.Contains(t, err.Error(), tt.want)
		}
		require.Len(t, strings.Split(err.Error(), "\n"), len(tests)+3, "one line per broken rule, plus the extra lines of badparams")
	})
}

func TestLookups(t *testing.T) {
	s := loadValid(t, "testdata/broken/references.yaml")
	handler := func(key string) *Handler {
		for _, h := range s.Handlers() {
			if h.Key() == key {
				return h
			}
		}
		t.Fatalf("no handler %s", key)
		return nil
	}
	instance := func(key string) *Instance {
		for _, i := range s.Instances() {
			if i.Key() == key {
				return i
			}
		}
		t.Fatalf("no instance %s", key)
		return nil
	}

	a, err := s.AdapterOf(handler("h2.handler.tenant"))
	require.NoError(t, err)
	require.Equal(t, "meshmetrics.adapter.istio-system", a.Key())
	tmpls, err := s.TemplatesOf(a)
	require.NoError(t, err)
	require.Equal(t, []string{"metric.template.istio-system"}, keys(tmpls))
	tmpl, err := s.TemplateOf(instance("tenantsize.instance.tenant"))
	require.NoError(t, err)
	require.Equal(t, "metric.template.istio-system", tmpl.Key())

	_, err = s.AdapterOf(handler("prometheus.handler.istio-system"))
	require.EqualError(t, err, `handler 'prometheus.handler.istio-system' (testdata/valid/config.yaml:74): compiledAdapter "prometheus" is built into Mixer, not an adapter CR`)
	_, err = s.TemplateOf(instance("requestcount.instance.istio-system"))
	require.EqualError(t, err, `instance 'requestcount.instance.istio-system' (testdata/valid/config.yaml:61): compiledTemplate "metric" is built into Mixer, not a template CR`)
	_, err = s.AdapterOf(handler("orphan.handler.istio-system"))
	require.EqualError(t, err, `handler 'orphan.handler.istio-system' (testdata/broken/references.yaml:2): adapter 'nosuch' not found (looked for nosuch.adapter.istio-system)`)
	_, err = s.TemplateOf(instance("othermetric.instance.other"))
	require.EqualError(t, err, `instance 'othermetric.instance.other' (testdata/broken/references.yaml:27): template 'metric' not found (looked for metric.template.other)`)
}

func TestManifestConflict(t *testing.T) {
	s := loadValid(t, "testdata/broken/conflicting_attributes.yaml")
	_, err := s.Manifest()
	require.EqualError(t, err, `attribute request.size is STRING in attributemanifest 'conflicting.attributemanifest.tenant' (testdata/broken/conflicting_attributes.yaml:1) but INT64 in attributemanifest 'istioproxy.attributemanifest.istio-system' (testdata/valid/attributes.yaml:2)`)
	rules, err := s.ResolveRules()
	require.Nil(t, rules)
	require.ErrorContains(t, err, "attribute request.size is STRING")
}

func TestIdentityNamespaceAndScope(t *testing.T) {
	tests := []struct {
		name      string
		bag       expr.MapBag
		identity  string
		inScopeNS []string // rule namespaces that fire, with istio-system as the default
	}{
		{"inbound by default", expr.MapBag{"destination.namespace": "tenant", "source.namespace": "web"}, "tenant", []string{"istio-system", "tenant"}},
		{"explicit inbound", expr.MapBag{"context.reporter.kind": "inbound", "destination.namespace": "tenant", "source.namespace": "web"}, "tenant", []string{"istio-system", "tenant"}},
		{"outbound uses the source", expr.MapBag{"context.reporter.kind": "outbound", "destination.namespace": "tenant", "source.namespace": "web"}, "web", []string{"istio-system", "web"}},
		{"unknown reporter kind", expr.MapBag{"context.reporter.kind": "gateway", "destination.namespace": "tenant"}, "", []string{"istio-system"}},
		{"non-string reporter kind counts as inbound", expr.MapBag{"context.reporter.kind": 1, "destination.namespace": "tenant"}, "tenant", []string{"istio-system", "tenant"}},
		{"no namespace attribute", expr.MapBag{}, "", []string{"istio-system"}},
		{"non-string namespace", expr.MapBag{"destination.namespace": 7}, "", []string{"istio-system"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.identity, IdentityNamespace(tt.bag))
			var fired []string
			for _, ns := range []string{"istio-system", "tenant", "web", "other"} {
				r := &Rule{Meta: Meta{Kind: KindRule, Name: "r", Namespace: ns}}
				if r.InScope(tt.bag, DefaultConfigNamespace) {
					fired = append(fired, ns)
				}
			}
			require.Equal(t, tt.inScopeNS, fired)
		})
	}

	r := &Rule{Meta: Meta{Kind: KindRule, Name: "r", Namespace: "mesh-config"}}
	require.True(t, r.InScope(expr.MapBag{}, "mesh-config"), "the default config namespace is a parameter")
	require.False(t, r.InScope(expr.MapBag{}, DefaultConfigNamespace))
}

func TestResolvedRuleScopeAndMatch(t *testing.T) {
	s := loadValid(t)
	rules, err := s.ResolveRules()
	require.NoError(t, err)
	r1, tenant := rules[1], rules[2]

	inbound := expr.MapBag{"context.reporter.kind": "inbound", "destination.namespace": "web", "request.path": "/v1/x"}
	require.True(t, r1.InScope(inbound, DefaultConfigNamespace))
	require.False(t, tenant.InScope(inbound, DefaultConfigNamespace))
	inbound["destination.namespace"] = "tenant"
	require.True(t, tenant.InScope(inbound, DefaultConfigNamespace))

	ok, err := r1.Matches(inbound)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = r1.Matches(expr.MapBag{"context.reporter.kind": "outbound", "request.path": "/v1/x"})
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = r1.Matches(expr.MapBag{"context.reporter.kind": "inbound"})
	require.EqualError(t, err, "lookup failed: 'request.path'")
	require.False(t, ok)
}
