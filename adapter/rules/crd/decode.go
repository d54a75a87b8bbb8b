package crd

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// LoadError is a problem at a place in a config file.
type LoadError struct {
	File string
	Line int
	Msg  string
}

func (e *LoadError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// decoder turns YAML nodes into resources with the leniency and strictness of gogo jsonpb,
// which Mixer uses on every spec (mixer/pkg/config/store/convert.go): fields may be named by
// their proto name or lowerCamel JSON name, and unknown fields are errors. It is stricter
// than jsonpb where jsonpb silently picks a winner: a field given under both names, a
// oneof given twice, and nulls (which Kubernetes-stored specs make Istio 1.7 reject).
type decoder struct {
	file   string
	offset int // lines before the current chunk
	errs   []error
}

func (d *decoder) line(n *yaml.Node) int { return d.offset + n.Line }

func (d *decoder) fail(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &LoadError{File: d.file, Line: d.line(n), Msg: fmt.Sprintf(format, args...)})
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a string"
	}
	return "a YAML node"
}

// jsonName is protoc's lowerCamel JSON name for a proto field name.
func jsonName(proto string) string {
	var b strings.Builder
	upper := false
	for _, r := range proto {
		if r == '_' {
			upper = true
			continue
		}
		if upper && 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		upper = false
		b.WriteRune(r)
	}
	return b.String()
}

// fields decodes a mapping whose keys are the proto field names in set.
func (d *decoder) fields(n *yaml.Node, what string, set map[string]func(*yaml.Node, string)) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.fail(n, "%s must be a mapping, got %s", what, kindName(n))
		return
	}
	seen := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		proto := ""
		for name := range set {
			if k.Value == name || k.Value == jsonName(name) {
				proto = name
				break
			}
		}
		if proto == "" {
			d.fail(k, "unknown field %q in %s (known fields: %s)", k.Value, what, knownFields(set))
			continue
		}
		if first, dup := seen[proto]; dup {
			d.fail(k, "field %q in %s is set twice (as %q and %q)", proto, what, first, k.Value)
			continue
		}
		seen[proto] = k.Value
		field := what + "." + k.Value
		if isNull(v) {
			d.fail(v, "%s is null: give it a value or remove it (Istio 1.7 rejects nulls with \"unknown object type nil\")", field)
			continue
		}
		set[proto](v, field)
	}
}

func knownFields(set map[string]func(*yaml.Node, string)) string {
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// str accepts only YAML strings: an unquoted number or bool becomes a JSON number or
// bool on Mixer's YAML-to-JSON path, which jsonpb refuses for a string field.
func (d *decoder) str(n *yaml.Node, field string) string {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!timestamp" && n.Tag != "!!binary") {
		d.fail(n, "%s must be a string, got %s (quote it)", field, kindName(n))
		return ""
	}
	return n.Value
}

func (d *decoder) boolean(n *yaml.Node, field string) bool {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		d.fail(n, "%s must be true or false, got %s", field, kindName(n))
		return false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		d.fail(n, "%s: %v", field, err)
	}
	return b
}

func (d *decoder) strList(n *yaml.Node, field string) []string {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, "%s must be a list of strings, got %s", field, kindName(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		out = append(out, d.str(resolve(item), fmt.Sprintf("%s[%d]", field, i)))
	}
	return out
}

func (d *decoder) strMap(n *yaml.Node, field string) map[string]string {
	if n.Kind != yaml.MappingNode {
		d.fail(n, "%s must be a mapping of strings, got %s", field, kindName(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if _, dup := out[k.Value]; dup {
			d.fail(k, "%s: key %q is set twice", field, k.Value)
			continue
		}
		out[k.Value] = d.str(v, field+"."+k.Value)
	}
	return out
}

// duration takes what jsonpb takes for google.protobuf.Duration: a string for
// time.ParseDuration, so "5s", "0.5s" and "10m" all work.
func (d *decoder) duration(n *yaml.Node, field string) time.Duration {
	s := d.str(n, field)
	if s == "" {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.fail(n, "%s: bad Duration: %v", field, err)
	}
	return v
}

func (d *decoder) base64(n *yaml.Node, field string) string {
	s := d.str(n, field)
	if _, err := base64.StdEncoding.DecodeString(s); err != nil {
		d.fail(n, "%s is not standard base64: %v", field, err)
	}
	return s
}

// enum accepts an enum value by name or number, as jsonpb does.
func (d *decoder) enum(n *yaml.Node, field string, names []string) string {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		i, err := strconv.Atoi(n.Value)
		if err == nil && i >= 0 && i < len(names) && names[i] != "" {
			return names[i]
		}
	} else if n.Kind == yaml.ScalarNode && slices.Contains(names, n.Value) && n.Value != "" {
		return n.Value
	}
	d.fail(n, "%s: unknown value %q (want one of %s)", field, n.Value, strings.Join(slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == "" }), ", "))
	return ""
}

// generic converts a google.protobuf.Struct-like value. Numbers become float64 because
// a Struct holds only doubles (mixer/pkg/runtime/config/converter.go, toDictionary).
func (d *decoder) generic(n *yaml.Node, field string) any {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if _, dup := out[k.Value]; dup {
				d.fail(k, "%s: key %q is set twice", field, k.Value)
				continue
			}
			out[k.Value] = d.generic(n.Content[i+1], field+"."+k.Value)
		}
		return out
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			out = append(out, d.generic(item, fmt.Sprintf("%s[%d]", field, i)))
		}
		return out
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				d.fail(n, "%s: %v", field, err)
			}
			return b
		case "!!int", "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				d.fail(n, "%s: %v", field, err)
			} else if math.IsInf(f, 0) || math.IsNaN(f) {
				d.fail(n, "%s: %s cannot be represented in JSON", field, n.Value)
			}
			return f
		}
		return n.Value
	}
	d.fail(n, "%s: unsupported YAML node", field)
	return nil
}

func (d *decoder) genericMap(n *yaml.Node, field string) map[string]any {
	m, ok := d.generic(n, field).(map[string]any)
	if !ok {
		d.fail(n, "%s must be a mapping, got %s", field, kindName(n))
	}
	return m
}

func (d *decoder) genericList(n *yaml.Node, field string) []any {
	l, ok := d.generic(n, field).([]any)
	if !ok {
		d.fail(n, "%s must be a list, got %s", field, kindName(n))
	}
	return l
}

// scalarParam is a param bound for an istio.policy.v1beta1.Value or a string field:
// Mixer accepts only strings, numbers and bools there (valueTypeEncoderBuilder).
func (d *decoder) scalarParam(n *yaml.Node, field string) any {
	v := d.generic(n, field)
	switch v.(type) {
	case string, float64, bool:
		return v
	}
	d.fail(n, "%s must be a string, number or bool, got %s", field, kindName(n))
	return nil
}

func (d *decoder) scalarParams(n *yaml.Node, field string) map[string]any {
	if n.Kind != yaml.MappingNode {
		d.fail(n, "%s must be a mapping, got %s", field, kindName(n))
		return nil
	}
	out := map[string]any{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if _, dup := out[k.Value]; dup {
			d.fail(k, "%s: key %q is set twice", field, k.Value)
			continue
		}
		out[k.Value] = d.scalarParam(resolve(n.Content[i+1]), field+"."+k.Value)
	}
	return out
}

func (d *decoder) attributeManifest(n *yaml.Node, m *AttributeManifest) {
	m.Attributes = map[string]AttributeInfo{}
	d.fields(n, "attributemanifest spec", map[string]func(*yaml.Node, string){
		"revision": func(v *yaml.Node, f string) { m.Revision = d.str(v, f) },
		"name":     func(v *yaml.Node, f string) { m.Name = d.str(v, f) },
		"attributes": func(v *yaml.Node, f string) {
			if v.Kind != yaml.MappingNode {
				d.fail(v, "%s must be a mapping, got %s", f, kindName(v))
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, a := v.Content[i], resolve(v.Content[i+1])
				if _, dup := m.Attributes[k.Value]; dup {
					d.fail(k, "%s: attribute %q is declared twice", f, k.Value)
					continue
				}
				m.Attributes[k.Value] = d.attributeInfo(a, f+"."+k.Value)
			}
		},
	})
}

func (d *decoder) attributeInfo(n *yaml.Node, what string) AttributeInfo {
	var info AttributeInfo
	if isNull(n) {
		d.fail(n, "%s is null: give it a valueType", what)
		return info
	}
	set := false
	d.fields(n, what, map[string]func(*yaml.Node, string){
		"description": func(v *yaml.Node, f string) { info.Description = d.str(v, f) },
		"value_type": func(v *yaml.Node, f string) {
			set = true
			names := make([]string, expr.StringMap+1)
			for t := expr.String; t <= expr.StringMap; t++ {
				names[t] = t.String()
			}
			if name := d.enum(v, f, names); name != "" {
				info.ValueType, _ = expr.ParseValueType(name)
			}
		},
	})
	if !set && resolve(n).Kind == yaml.MappingNode {
		d.fail(n, "%s has no valueType", what)
	}
	return info
}

func (d *decoder) template(n *yaml.Node, t *Template) {
	d.fields(n, "template spec", map[string]func(*yaml.Node, string){
		"descriptor": func(v *yaml.Node, f string) { t.Descriptor = d.base64(v, f) },
	})
	if t.Descriptor == "" {
		d.fail(n, "template spec has no descriptor")
	}
}

func (d *decoder) adapter(n *yaml.Node, a *Adapter) {
	d.fields(n, "adapter spec", map[string]func(*yaml.Node, string){
		"name":          func(v *yaml.Node, f string) { d.str(v, f) },
		"description":   func(v *yaml.Node, f string) { a.Description = d.str(v, f) },
		"templates":     func(v *yaml.Node, f string) { a.Templates = d.strList(v, f) },
		"config":        func(v *yaml.Node, f string) { a.Config = d.base64(v, f) },
		"session_based": func(v *yaml.Node, f string) { a.SessionBased = d.boolean(v, f) },
	})
}

func (d *decoder) handler(n *yaml.Node, h *Handler) {
	d.fields(n, "handler spec", map[string]func(*yaml.Node, string){
		"name":             func(v *yaml.Node, f string) { d.str(v, f) },
		"adapter":          func(v *yaml.Node, f string) { h.Adapter = d.str(v, f) },
		"compiled_adapter": func(v *yaml.Node, f string) { h.CompiledAdapter = d.str(v, f) },
		"params":           func(v *yaml.Node, f string) { h.Params = d.genericMap(v, f) },
		"connection": func(v *yaml.Node, f string) {
			h.Connection = &Connection{}
			d.connection(v, f, h.Connection)
		},
	})
	if h.Adapter == "" && h.CompiledAdapter == "" {
		d.fail(n, "handler spec names no adapter (set adapter, or compiledAdapter for a built-in one)")
	}
}

func (d *decoder) connection(n *yaml.Node, what string, c *Connection) {
	d.fields(n, what, map[string]func(*yaml.Node, string){
		"address": func(v *yaml.Node, f string) { c.Address = d.str(v, f) },
		"timeout": func(v *yaml.Node, f string) { c.Timeout = d.duration(v, f) },
		"authentication": func(v *yaml.Node, f string) {
			c.Authentication = &Authentication{}
			d.authentication(v, f, c.Authentication)
		},
	})
}

func (d *decoder) authentication(n *yaml.Node, what string, a *Authentication) {
	d.fields(n, what, map[string]func(*yaml.Node, string){
		"tls": func(v *yaml.Node, f string) {
			a.TLS = &TLS{}
			d.tls(v, f, a.TLS)
		},
		"mutual": func(v *yaml.Node, f string) {
			a.Mutual = &Mutual{}
			d.fields(v, f, map[string]func(*yaml.Node, string){
				"private_key":        func(v *yaml.Node, f string) { a.Mutual.PrivateKey = d.str(v, f) },
				"client_certificate": func(v *yaml.Node, f string) { a.Mutual.ClientCertificate = d.str(v, f) },
				"ca_certificates":    func(v *yaml.Node, f string) { a.Mutual.CACertificates = d.str(v, f) },
				"server_name":        func(v *yaml.Node, f string) { a.Mutual.ServerName = d.str(v, f) },
			})
		},
	})
	if a.TLS != nil && a.Mutual != nil {
		d.fail(n, "%s sets both tls and mutual; they are a oneof", what)
	}
}

func (d *decoder) tls(n *yaml.Node, what string, t *TLS) {
	authHeader := false
	d.fields(n, what, map[string]func(*yaml.Node, string){
		"ca_certificates": func(v *yaml.Node, f string) { t.CACertificates = d.str(v, f) },
		"token_path":      func(v *yaml.Node, f string) { t.TokenPath = d.str(v, f) },
		"oauth": func(v *yaml.Node, f string) {
			t.OAuth = &OAuth{}
			d.fields(v, f, map[string]func(*yaml.Node, string){
				"client_id":       func(v *yaml.Node, f string) { t.OAuth.ClientID = d.str(v, f) },
				"client_secret":   func(v *yaml.Node, f string) { t.OAuth.ClientSecret = d.str(v, f) },
				"token_url":       func(v *yaml.Node, f string) { t.OAuth.TokenURL = d.str(v, f) },
				"scopes":          func(v *yaml.Node, f string) { t.OAuth.Scopes = d.strList(v, f) },
				"endpoint_params": func(v *yaml.Node, f string) { t.OAuth.EndpointParams = d.strMap(v, f) },
			})
		},
		"auth_header": func(v *yaml.Node, f string) {
			authHeader = true
			t.AuthHeader = d.enum(v, f, []string{"PLAIN", "BEARER"})
		},
		"custom_header": func(v *yaml.Node, f string) { t.CustomHeader = d.str(v, f) },
		"server_name":   func(v *yaml.Node, f string) { t.ServerName = d.str(v, f) },
	})
	if t.TokenPath != "" && t.OAuth != nil {
		d.fail(n, "%s sets both token_path and oauth; they are a oneof", what)
	}
	if authHeader && t.CustomHeader != "" {
		d.fail(n, "%s sets both auth_header and custom_header; they are a oneof", what)
	}
}

// isMetric reports whether a template reference names the metric template, whose params
// are checked field by field at load time. Params of other templates are kept as written.
func isMetric(ref string) bool {
	name, _, _ := strings.Cut(ref, ".")
	return name == "metric"
}

func (d *decoder) instance(n *yaml.Node, inst *Instance) {
	var params *yaml.Node
	var paramsField string
	d.fields(n, "instance spec", map[string]func(*yaml.Node, string){
		"name":               func(v *yaml.Node, f string) { d.str(v, f) },
		"template":           func(v *yaml.Node, f string) { inst.Template = d.str(v, f) },
		"compiled_template":  func(v *yaml.Node, f string) { inst.CompiledTemplate = d.str(v, f) },
		"params":             func(v *yaml.Node, f string) { params, paramsField = v, f },
		"attribute_bindings": func(v *yaml.Node, f string) { inst.AttributeBindings = d.strMap(v, f) },
	})
	switch {
	case inst.Template == "" && inst.CompiledTemplate == "":
		d.fail(n, "instance spec names no template (set template, or compiledTemplate for a built-in one)")
	case inst.Template != "" && inst.CompiledTemplate != "":
		d.fail(n, "instance spec sets both template and compiledTemplate")
	}
	if params == nil {
		return
	}
	inst.RawParams = d.genericMap(params, paramsField)
	if isMetric(inst.Template + inst.CompiledTemplate) {
		inst.Params = &MetricParams{}
		d.metricParams(params, paramsField, inst.Params)
	}
}

// metricParams checks params against metric's InstanceMsg; Mixer finds fields by proto or
// JSON name and refuses unknown ones (dynamic/builder.go, buildMessage).
func (d *decoder) metricParams(n *yaml.Node, what string, p *MetricParams) {
	d.fields(n, what, map[string]func(*yaml.Node, string){
		"value":                         func(v *yaml.Node, f string) { p.Value = d.scalarParam(v, f) },
		"dimensions":                    func(v *yaml.Node, f string) { p.Dimensions = d.scalarParams(v, f) },
		"monitored_resource_type":       func(v *yaml.Node, f string) { p.MonitoredResourceType = d.scalarParam(v, f) },
		"monitored_resource_dimensions": func(v *yaml.Node, f string) { p.MonitoredResourceDimensions = d.scalarParams(v, f) },
	})
}

func (d *decoder) rule(n *yaml.Node, r *Rule) {
	d.fields(n, "rule spec", map[string]func(*yaml.Node, string){
		"match": func(v *yaml.Node, f string) { r.Match = d.str(v, f) },
		"actions": func(v *yaml.Node, f string) {
			if v.Kind != yaml.SequenceNode {
				d.fail(v, "%s must be a list, got %s", f, kindName(v))
				return
			}
			for i, item := range v.Content {
				var a Action
				d.fields(item, fmt.Sprintf("%s[%d]", f, i), map[string]func(*yaml.Node, string){
					"handler":   func(v *yaml.Node, f string) { a.Handler = d.str(v, f) },
					"instances": func(v *yaml.Node, f string) { a.Instances = d.strList(v, f) },
					"name":      func(v *yaml.Node, f string) { a.Name = d.str(v, f) },
				})
				r.Actions = append(r.Actions, a)
			}
		},
		"request_header_operations":  func(v *yaml.Node, f string) { r.RequestHeaderOperations = d.genericList(v, f) },
		"response_header_operations": func(v *yaml.Node, f string) { r.ResponseHeaderOperations = d.genericList(v, f) },
		"sampling":                   func(v *yaml.Node, f string) { r.Sampling = d.generic(v, f) },
	})
}
