package otlp

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// keyPrefix starts the key (and name) of every OTLP sink.
const keyPrefix = "otlp:"

// Factory builds OTLP sinks, one per distinct otlp block.
type Factory struct {
	env sinks.Env
}

// NewFactory makes the OTLP factory. Keys digest the block under
// env.KeySalt (the spool's when there is one, so that a destination keeps
// its key and spool directory across restarts).
func NewFactory(env sinks.Env) sinks.Factory {
	if env.KeySalt == nil {
		env.KeySalt = make([]byte, 32)
		_, _ = rand.Read(env.KeySalt) // a partial wiring (tests) still gets a secret salt
	}
	return &Factory{env: env}
}

// Configured implements sinks.Factory: p has an otlp block.
func (f *Factory) Configured(p *config.Params) bool { return p.Otlp != nil }

// Normalize implements sinks.Factory: the otlp block's defaults and rules
// (config.go).
func (f *Factory) Normalize(p *config.Params) config.FieldErrors {
	if p.Otlp == nil {
		return nil
	}
	return normalize(p.Otlp)
}

// Key implements sinks.Factory: "otlp:<endpoint>#<digest>", where the
// digest covers the whole block (header values, which may be credentials,
// only through the keyed digest), so that any change to it builds a new
// sink. The replica name is not in it: it is in every request already, so
// requests spooled by an earlier run keep their own.
func (f *Factory) Key(p *config.Params) string {
	if p.Otlp == nil || p.Otlp.Endpoint == "" {
		return ""
	}
	b, _ := json.Marshal(p.Otlp) // sorts map keys: equal blocks, equal bytes
	return keyPrefix + redactURL(p.Otlp.Endpoint) + "#" + sinks.KeyDigest(f.env.KeySalt, b)
}

// Check implements sinks.Factory: metric names must give valid OTLP
// instrument names, distinct within the config; the TLS files and header
// files must be readable now (New reads them).
func (f *Factory) Check(p *config.Params, metrics []*sinks.Metric) error {
	o := p.Otlp
	if o == nil {
		return nil
	}
	var errs config.FieldErrors
	add := func(field, format string, args ...any) {
		errs = append(errs, config.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	names := map[string]int{}
	for i, m := range metrics {
		name := MetricName(m)
		if name == "" {
			add(fmt.Sprintf("metrics[%d].name", i), "gives no valid OTLP metric name (a letter first, then letters, digits, _ . - /)")
			continue
		}
		if j, dup := names[strings.ToLower(name)]; dup {
			add(fmt.Sprintf("metrics[%d].name", i), "maps to the OTLP name %q, as metrics[%d] does (instrument names are case-insensitive)", name, j)
		}
		names[strings.ToLower(name)] = i
		seen := map[string]bool{}
		for _, l := range m.LabelNames {
			if l == "" {
				add(fmt.Sprintf("metrics[%d].label_names", i), "an empty label name")
			}
			if seen[l] {
				add(fmt.Sprintf("metrics[%d].label_names", i), "label %q is listed twice", l)
			}
			seen[l] = true
		}
	}
	ep, err := parseEndpoint(o)
	if err != nil {
		add("otlp.endpoint", "%v", err)
	} else if _, err := tlsConfig(o, ep); err != nil {
		add("otlp", "%v", err)
	}
	if err := checkHeaderFiles(o); err != nil {
		add("otlp.header_files", "%v", err)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// New implements sinks.Factory.
func (f *Factory) New(p *config.Params) (sinks.Sink, error) {
	if p.Otlp == nil {
		return nil, fmt.Errorf("%w: no otlp block", config.ErrInvalid)
	}
	return newSink(f.Key(p), p.Otlp, f.env)
}

// MetricName is the OTLP name of m: namespace and name joined by ".", every
// character outside an instrument name's [A-Za-z0-9_./-] replaced by "_",
// cut at 255 characters; "" when it would not start with a letter.
func MetricName(m *sinks.Metric) string {
	full := m.Name
	if m.Namespace != "" {
		full = m.Namespace + "." + m.Name
	}
	var b strings.Builder
	for _, r := range full {
		if b.Len() >= 255 {
			break
		}
		switch {
		case r == '_' || r == '.' || r == '-' || r == '/' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := b.String()
	if out == "" || (out[0] < 'a' || out[0] > 'z') && (out[0] < 'A' || out[0] > 'Z') {
		return ""
	}
	return out
}
