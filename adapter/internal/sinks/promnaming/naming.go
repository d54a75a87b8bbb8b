// Package promnaming maps the metric and label names of a handler config to valid
// Prometheus names the way Istio's Prometheus adapter does, and refuses the
// definitions whose names cannot be exposed.
package promnaming

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// istioReplacer is the character mapping of Istio's safeName.
var istioReplacer = strings.NewReplacer("/", "_", ".", "_", " ", "_", "-", "")

// SafeName is Istio's safeName: a leading "/" is dropped, "/", "." and space
// become "_", and "-" is deleted.
func SafeName(s string) string {
	return istioReplacer.Replace(strings.TrimPrefix(s, "/"))
}

// MetricName maps s to a valid metric name: SafeName, then every character
// outside [a-zA-Z0-9_:] becomes "_" (one per character, not per byte), and a
// leading digit gets a "_" in front. Names that Istio's adapter accepted come
// out unchanged. An empty result stays empty (the caller refuses it).
func MetricName(s string) string { return sanitise(SafeName(s), true) }

// LabelName is MetricName for label names, where ":" is not allowed either.
func LabelName(s string) string { return sanitise(SafeName(s), false) }

func sanitise(s string, colon bool) string {
	if validName(s, colon) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 1)
	for i, r := range s {
		if i == 0 && r >= '0' && r <= '9' {
			b.WriteByte('_')
		}
		if validChar(r, colon) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func validChar(r rune, colon bool) bool {
	return r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || (colon && r == ':')
}

func validName(s string, colon bool) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !validChar(rune(s[i]), colon) {
			return false
		}
	}
	return true
}

// FullName is the metric name of m: namespace and name, each through
// MetricName, joined by "_" (an empty part is left out, as client_golang's
// BuildFQName does).
func FullName(namespace, name string) string {
	ns, n := MetricName(namespace), MetricName(name)
	switch {
	case ns == "":
		return n
	case n == "":
		return ns
	}
	return ns + "_" + n
}

// Names are the Prometheus names of one metric.
type Names struct {
	// Name is the metric's full name (a histogram's base name).
	Name string
	// Labels are the label names, in the order of Metric.LabelNames.
	Labels []string
	// Exposed are the names the metric claims: Name, and for a histogram
	// also Name_bucket, Name_sum and Name_count (client_golang refuses a
	// family whose name is another histogram's name plus such a suffix).
	Exposed []string
}

// Resolve computes the names of m, or says why m cannot be a Prometheus
// metric: an implicit metric (no fixed label names), an empty name, a label
// name that is empty, reserved ("__" prefix, or "le" on a histogram) or that
// collides with another label name once sanitised.
func Resolve(m *sinks.Metric) (Names, error) {
	if m.Implicit {
		return Names{}, fmt.Errorf("metric %q has no metrics list entry: Prometheus needs fixed label names, so give the handler a `metrics` list", m.Name)
	}
	n := Names{Name: FullName(m.Namespace, m.Name)}
	if n.Name == "" {
		return Names{}, fmt.Errorf("metric name %q in namespace %q is empty once sanitised", m.Name, m.Namespace)
	}
	seen := make(map[string]string, len(m.LabelNames))
	for _, raw := range m.LabelNames {
		l := LabelName(raw)
		switch {
		case l == "":
			return Names{}, fmt.Errorf("metric %s: label name %q is empty once sanitised", n.Name, raw)
		case strings.HasPrefix(l, "__"):
			return Names{}, fmt.Errorf("metric %s: label name %q is reserved (Prometheus keeps names starting with \"__\" for itself)", n.Name, l)
		case l == "le" && m.Kind == sinks.Distribution:
			return Names{}, fmt.Errorf("metric %s: a DISTRIBUTION cannot have a label named \"le\" (Prometheus uses it for bucket bounds)", n.Name)
		}
		if other, dup := seen[l]; dup {
			return Names{}, fmt.Errorf("metric %s: label names %q and %q both become %q", n.Name, other, raw, l)
		}
		seen[l] = raw
		n.Labels = append(n.Labels, l)
	}
	n.Exposed = []string{n.Name}
	if m.Kind == sinks.Distribution {
		n.Exposed = append(n.Exposed, n.Name+"_bucket", n.Name+"_sum", n.Name+"_count")
	}
	return n, nil
}

// CheckAll resolves every metric and refuses two metrics whose series names
// would collide (the same full name, or a histogram's _bucket, _sum or _count
// equal to another metric's name).
func CheckAll(metrics []*sinks.Metric) error {
	type claim struct {
		index int
		name  string
	}
	owner := map[string]claim{} // exposed name -> the metric claiming it
	for i, m := range metrics {
		n, err := Resolve(m)
		if err != nil {
			return fmt.Errorf("metrics[%d]: %w", i, err)
		}
		if other, dup := owner[n.Name]; dup && other.name == n.Name {
			return fmt.Errorf("metrics[%d] (%q) and metrics[%d] (%q) both become %s", other.index, metrics[other.index].Name, i, m.Name, n.Name)
		}
		for _, e := range n.Exposed {
			if other, dup := owner[e]; dup {
				return fmt.Errorf("metrics[%d]: metric %s would expose series %s, which metric %s (metrics[%d]) already exposes", i, n.Name, e, other.name, other.index)
			}
		}
		for _, e := range n.Exposed {
			owner[e] = claim{i, n.Name}
		}
	}
	return nil
}

// LabelValue makes v valid UTF-8, replacing invalid bytes with U+FFFD.
func LabelValue(v string) string {
	if utf8.ValidString(v) {
		return v
	}
	return strings.ToValidUTF8(v, "\uFFFD")
}
