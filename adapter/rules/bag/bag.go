// Package bag builds attribute bags, the input of a Mixer Report, from mixc-style flags or
// from YAML/JSON files, and checks them against the attribute manifests.
package bag

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// Flags are the attribute flags of mixc (istio/istio@1.7.0:mixer/cmd/mixc/cmd/root.go), each
// a list "name1=value1,name2=value2". They are applied in this order, later ones replacing
// earlier ones, as mixc does (util.go, parseAttributes).
type Flags struct {
	String    string // -s, --string_attributes
	Int64     string // -i, --int64_attributes
	Double    string // -d, --double_attributes
	Bool      string // -b, --bool_attributes
	Timestamp string // -t, --timestamp_attributes (RFC 3339)
	Duration  string // --duration_attributes (Go duration)
	Bytes     string // --bytes_attributes (hex bytes, b0:b1:b2)
	StringMap string // --stringmap_attributes (k1:v1;k2:v2)
	Any       string // -a, --attributes (type sensed)
}

// Empty reports whether no attribute flag was given.
func (f Flags) Empty() bool { return f == Flags{} }

// Source says which flag gave an attribute, for messages.
type Source map[string]string

// FromFlags builds one bag from mixc flags. Values are parsed as mixc parses them; Check
// then holds them against the manifest.
func FromFlags(f Flags) (expr.MapBag, Source, error) {
	b, src := expr.MapBag{}, Source{}
	lists := []struct {
		flag  string
		list  string
		parse func(string) (any, error)
	}{
		{"-s", f.String, func(s string) (any, error) { return s, nil }},
		{"-i", f.Int64, func(s string) (any, error) { return strconv.ParseInt(s, 10, 64) }},
		{"-d", f.Double, func(s string) (any, error) { return strconv.ParseFloat(s, 64) }},
		{"-b", f.Bool, func(s string) (any, error) { return strconv.ParseBool(s) }},
		{"-t", f.Timestamp, func(s string) (any, error) { return time.Parse(time.RFC3339, s) }},
		{"--duration_attributes", f.Duration, func(s string) (any, error) { return time.ParseDuration(s) }},
		{"--bytes_attributes", f.Bytes, parseBytes},
		{"--stringmap_attributes", f.StringMap, parseStringMap},
		{"-a", f.Any, parseAny},
	}
	for _, l := range lists {
		if l.list == "" {
			continue
		}
		for _, seg := range strings.Split(l.list, ",") {
			name, value, ok := strings.Cut(seg, "=")
			if !ok {
				return nil, nil, fmt.Errorf("%s: attribute value %q does not include an = sign", l.flag, seg)
			}
			if name == "" {
				return nil, nil, fmt.Errorf("%s: attribute value %q does not contain a valid name", l.flag, seg)
			}
			v, err := l.parse(value)
			if err != nil {
				return nil, nil, fmt.Errorf("%s %s=%s: %w", l.flag, name, value, err)
			}
			b[name], src[name] = v, l.flag
		}
	}
	return b, src, nil
}

func parseBytes(s string) (any, error) {
	var out []byte
	for _, seg := range strings.Split(s, ":") {
		v, err := strconv.ParseUint(seg, 16, 8)
		if err != nil {
			return nil, err
		}
		out = append(out, byte(v))
	}
	return out, nil
}

func parseStringMap(s string) (any, error) {
	m := map[string]string{}
	for _, pair := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(pair, ":")
		if !ok {
			return nil, fmt.Errorf("%s is not a valid key/value pair in the form key:value", pair)
		}
		m[k] = v
	}
	return m, nil
}

// parseAny senses a type in mixc's order (util.go, parseAny): int64, float64, bool, RFC 3339
// timestamp, Go duration, hex bytes, string map, else string. So "ab" is the byte 0xab and
// "a:b" a string map, as with mixc; Check says so when the manifest disagrees.
func parseAny(s string) (any, error) {
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return v, nil
	}
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		return v, nil
	}
	if v, err := strconv.ParseBool(s); err == nil {
		return v, nil
	}
	if v, err := time.Parse(time.RFC3339, s); err == nil {
		return v, nil
	}
	if v, err := time.ParseDuration(s); err == nil {
		return v, nil
	}
	if v, err := parseBytes(s); err == nil {
		return v, nil
	}
	if v, err := parseStringMap(s); err == nil {
		return v, nil
	}
	return s, nil
}

// goType names the type of a bag value as the manifest would.
func goType(v any) string {
	switch v.(type) {
	case string:
		return "STRING"
	case int64:
		return "INT64"
	case float64:
		return "DOUBLE"
	case bool:
		return "BOOL"
	case time.Time:
		return "TIMESTAMP"
	case time.Duration:
		return "DURATION"
	case []byte, net.IP:
		return "bytes"
	case map[string]string:
		return "STRING_MAP"
	}
	return fmt.Sprintf("%T", v)
}

// fits reports whether a bag value has the Go type expr expects for t (expr.Bag).
func fits(v any, t expr.ValueType) bool {
	switch v.(type) {
	case string:
		return t == expr.String || t == expr.EmailAddress || t == expr.URI || t == expr.DNSName
	case int64:
		return t == expr.Int64 || t == expr.Duration
	case float64:
		return t == expr.Double
	case bool:
		return t == expr.Bool
	case time.Time:
		return t == expr.Timestamp
	case time.Duration:
		return t == expr.Duration || t == expr.Int64
	case []byte, net.IP:
		return t == expr.IPAddress
	case map[string]string:
		return t == expr.StringMap
	}
	return false
}

// flagFor is the mixc flag that gives an attribute of type t.
func flagFor(t expr.ValueType) string {
	switch t {
	case expr.Int64:
		return "-i"
	case expr.Double:
		return "-d"
	case expr.Bool:
		return "-b"
	case expr.Timestamp:
		return "-t"
	case expr.Duration:
		return "--duration_attributes"
	case expr.IPAddress:
		return "-s (an IP address in text) or --bytes_attributes"
	case expr.StringMap:
		return "--stringmap_attributes"
	}
	return "-s"
}

// Check holds a bag against the manifest: every attribute must be declared and have a value
// of the declared type. IP_ADDRESS attributes given as text ("10.0.0.1") are converted to
// their bytes, because mixc's hex form is tedious; everything else must already fit. src
// names the flag each attribute came from, for the message; it may be nil.
func Check(b expr.MapBag, m expr.Manifest, src Source) error {
	var errs []error
	for _, name := range sortedNames(b) {
		v := b[name]
		t, ok := m[name]
		if !ok {
			errs = append(errs, fmt.Errorf("unknown attribute %q: no attribute manifest declares it%s", name, suggest(name, m)))
			continue
		}
		if s, isString := v.(string); isString && t == expr.IPAddress {
			if ip := parseIP(s); ip != nil {
				b[name] = ip
				continue
			}
			errs = append(errs, fmt.Errorf("attribute %s is IP_ADDRESS but %q is not an IP address", name, s))
			continue
		}
		if fits(v, t) {
			continue
		}
		var how string
		if f := src[name]; f == "-a" {
			how = fmt.Sprintf(": -a sensed %s from %s; pass it with %s", goType(v), quoteValue(v), flagFor(t))
		} else if f != "" {
			how = fmt.Sprintf(": %s gives %s; use %s", f, goType(v), flagFor(t))
		} else {
			how = fmt.Sprintf(", got %s %s", goType(v), quoteValue(v))
		}
		errs = append(errs, fmt.Errorf("attribute %s is %s in the attribute manifest%s", name, t, how))
	}
	return errors.Join(errs...)
}

func quoteValue(v any) string {
	switch x := v.(type) {
	case []byte:
		return fmt.Sprintf("% x", x)
	case string:
		return strconv.Quote(x)
	}
	return fmt.Sprintf("%v", v)
}

// parseIP returns 4 bytes for an IPv4 address, as the proxy sends, and 16 for IPv6.
func parseIP(s string) net.IP {
	ip := net.ParseIP(s)
	if ip == nil {
		return nil
	}
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

func sortedNames(b expr.MapBag) []string {
	names := make([]string, 0, len(b))
	for k := range b {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// suggest names a declared attribute close to a misspelt one.
func suggest(name string, m expr.Manifest) string {
	if best := expr.Closest(name, m); best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	return ""
}

// Error is a problem with an attributes file, at a line.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// ReadFile reads bags from a YAML or JSON file (see Parse).
func ReadFile(path string, m expr.Manifest) ([]expr.MapBag, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, m)
}

// Parse reads attribute bags from YAML or JSON: a list of mappings (one bag each), a single
// mapping (one bag), or several YAML documents. Each key is an attribute name; the manifest
// decides how its value is read:
//   - STRING, EMAIL_ADDRESS, URI, DNS_NAME: any scalar, as its text;
//   - INT64: an integer; DOUBLE: a number; BOOL: true or false;
//   - TIMESTAMP: an RFC 3339 string; DURATION: a Go duration string ("10ms");
//   - IP_ADDRESS: an address in text ("10.0.0.1");
//   - STRING_MAP: a mapping of strings.
//
// Every problem is reported with its file and line.
func Parse(name string, data []byte, m expr.Manifest) ([]expr.MapBag, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var bags []expr.MapBag
	var errs []error
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "yaml: ")
			// yaml.v3 puts the line in the message text only.
			if m := regexp.MustCompile(`^line (\d+): (.*)$`).FindStringSubmatch(msg); m != nil {
				line, _ := strconv.Atoi(m[1])
				return nil, &Error{name, line, "invalid YAML: " + m[2]}
			}
			return nil, fmt.Errorf("%s: invalid YAML: %s", name, msg)
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		switch root.Kind {
		case yaml.MappingNode:
			b, e := readBag(name, root, m)
			bags, errs = append(bags, b), append(errs, e...)
		case yaml.SequenceNode:
			for _, item := range root.Content {
				if item.Kind != yaml.MappingNode {
					errs = append(errs, &Error{name, item.Line, "each bag must be a mapping of attribute names to values"})
					continue
				}
				b, e := readBag(name, item, m)
				bags, errs = append(bags, b), append(errs, e...)
			}
		default:
			errs = append(errs, &Error{name, root.Line, "want a list of attribute bags or one bag (a mapping)"})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(bags) == 0 {
		return nil, fmt.Errorf("%s: no attribute bags", name)
	}
	return bags, nil
}

func readBag(file string, n *yaml.Node, m expr.Manifest) (expr.MapBag, []error) {
	b := expr.MapBag{}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fail := func(format string, args ...any) {
			errs = append(errs, &Error{file, v.Line, k.Value + ": " + fmt.Sprintf(format, args...)})
		}
		t, ok := m[k.Value]
		if !ok {
			errs = append(errs, &Error{file, k.Line, fmt.Sprintf("unknown attribute %q: no attribute manifest declares it%s", k.Value, suggest(k.Value, m))})
			continue
		}
		if _, dup := b[k.Value]; dup {
			errs = append(errs, &Error{file, k.Line, fmt.Sprintf("attribute %s is set twice in one bag", k.Value)})
			continue
		}
		if t == expr.StringMap {
			sm, err := stringMap(v)
			if err != nil {
				fail("%v", err)
				continue
			}
			b[k.Value] = sm
			continue
		}
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			fail("want a %s value, got %s", t, describe(v))
			continue
		}
		val, err := scalar(v, t)
		if err != nil {
			fail("%v", err)
			continue
		}
		b[k.Value] = val
	}
	return b, errs
}

func describe(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if v.Tag == "!!null" {
		return "null"
	}
	return strconv.Quote(v.Value)
}

func scalar(v *yaml.Node, t expr.ValueType) (any, error) {
	s := v.Value
	switch t {
	case expr.String, expr.EmailAddress, expr.URI, expr.DNSName:
		return s, nil
	case expr.Int64:
		if v.Tag != "!!int" {
			return nil, fmt.Errorf("want an INT64 (an integer), got %s", describe(v))
		}
		var i int64
		if err := v.Decode(&i); err != nil {
			return nil, fmt.Errorf("want an INT64: %w", err)
		}
		return i, nil
	case expr.Double:
		if v.Tag != "!!int" && v.Tag != "!!float" {
			return nil, fmt.Errorf("want a DOUBLE (a number), got %s", describe(v))
		}
		var f float64
		if err := v.Decode(&f); err != nil {
			return nil, fmt.Errorf("want a DOUBLE: %w", err)
		}
		return f, nil
	case expr.Bool:
		if v.Tag != "!!bool" {
			return nil, fmt.Errorf("want a BOOL (true or false), got %s", describe(v))
		}
		var x bool
		if err := v.Decode(&x); err != nil {
			return nil, err
		}
		return x, nil
	case expr.Timestamp:
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, fmt.Errorf("want a TIMESTAMP in RFC 3339 (2020-01-02T03:04:05Z), got %s", describe(v))
		}
		return ts, nil
	case expr.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("want a DURATION such as 10ms or 1.5s, got %s", describe(v))
		}
		return d, nil
	case expr.IPAddress:
		if ip := parseIP(s); ip != nil {
			return ip, nil
		}
		return nil, fmt.Errorf("want an IP_ADDRESS such as 10.0.0.1, got %s", describe(v))
	}
	return nil, fmt.Errorf("attributes of type %s cannot be given in a file", t)
}

func stringMap(v *yaml.Node) (map[string]string, error) {
	if v.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("want a STRING_MAP (a mapping of strings), got %s", describe(v))
	}
	out := map[string]string{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, e := v.Content[i], v.Content[i+1]
		if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
			return nil, fmt.Errorf("key %s: want a string, got %s", k.Value, describe(e))
		}
		out[k.Value] = e.Value
	}
	return out, nil
}
