package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
)

// Type URLs accepted in adapter_config.
const (
	// TypeURL is what Mixer sends for handlers of the meshmetrics adapter CR.
	TypeURL = "type.googleapis.com/adapter.meshmetrics.config.Params"
	// LegacyLibratoTypeURL is what Mixer sends when the seed librato adapter's
	// CR is still installed and only the handler's address points here. Its
	// fields 1 and 2 are ours too, so its bytes decode as Params.
	LegacyLibratoTypeURL = "type.googleapis.com/adapter.librato.config.Params"
)

// ErrInvalid wraps every error of Decode and Normalize: the config, not the
// adapter, is at fault (gRPC InvalidArgument).
var ErrInvalid = errors.New("invalid handler config")

// FieldError is one problem with one field, named by its proto path.
type FieldError struct {
	Field   string
	Message string
}

func (e FieldError) String() string { return e.Field + ": " + e.Message }

// FieldErrors lists every problem found in a Params, so that an operator can
// fix them in one go.
type FieldErrors []FieldError

func (fe FieldErrors) Error() string {
	parts := make([]string, len(fe))
	for i, e := range fe {
		parts[i] = e.String()
	}
	return fmt.Sprintf("%s: %s", ErrInvalid, strings.Join(parts, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (fe FieldErrors) Unwrap() error { return ErrInvalid }

// Decode reads Params from the type URL and bytes of Mixer's adapter_config.
// An absent adapter_config (an adapter CR without a descriptor) and an empty
// value (a handler without params) both give empty Params.
func Decode(present bool, typeURL, value []byte) (*Params, error) {
	p := &Params{}
	if !present {
		return p, nil
	}
	switch string(typeURL) {
	case TypeURL, LegacyLibratoTypeURL:
	default:
		return nil, fmt.Errorf("%w: adapter_config has type_url %q; want %q (is the handler's adapter the meshmetrics adapter CR?)",
			ErrInvalid, truncate(string(typeURL), 200), TypeURL)
	}
	if err := p.Unmarshal(value); err != nil {
		return nil, fmt.Errorf("%w: adapter_config value does not decode as %s: %w", ErrInvalid, TypeURL, err)
	}
	return p, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Normalize returns a copy of p with the seed adapter's fields moved into the
// librato block and the generic defaults filled in (metrics, limits,
// expiration), or the list of what is wrong. Each backend's block is the
// backend's business: its sink factory normalizes it (sinks.Resolve).
// Normalize(Normalize(p)) equals Normalize(p).
func Normalize(in *Params) (*Params, error) {
	p := &Params{}
	data, err := in.Marshal()
	if err == nil {
		err = p.Unmarshal(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var errs FieldErrors
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}

	// The deprecated fields are read only to migrate them.
	if p.LibratoEmail != "" || p.LibratoToken != "" {
		if p.Librato != nil {
			add("librato_email", "set either librato or the deprecated librato_email/librato_token, not both")
		} else {
			// The seed adapter posted to AppOptics with the token as the
			// Basic-auth user and never used the email; keep doing that.
			p.Librato = &LibratoParams{Url: SeedAdapterURL, Token: p.LibratoToken}
		}
		p.LibratoEmail, p.LibratoToken = "", ""
	}

	p.Limits = normalizeLimits(p.Limits, add)
	normalizeMetrics(p, add)
	if p.MetricsExpirationPolicy != nil {
		ep := p.MetricsExpirationPolicy
		if ep.MetricsExpiryDuration <= 0 {
			add("metrics_expiration_policy.metrics_expiry_duration", "must be > 0")
		}
		if ep.ExpiryCheckIntervalDuration < 0 {
			add("metrics_expiration_policy.expiry_check_interval_duration", "must be >= 0")
		}
		if ep.ExpiryCheckIntervalDuration == 0 {
			ep.ExpiryCheckIntervalDuration = ep.MetricsExpiryDuration / 2
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

func normalizeLimits(l *Limits, add func(string, string, ...any)) *Limits {
	if l == nil {
		l = &Limits{}
	}
	if l.MaxSeriesPerMetric < 0 {
		add("limits.max_series_per_metric", "must be >= 0")
	}
	if l.MaxSeriesPerMetric == 0 {
		l.MaxSeriesPerMetric = DefaultMaxSeriesPerMetric
	}
	if l.MaxLabelValueLength < 0 {
		add("limits.max_label_value_length", "must be >= 0")
	}
	if l.MaxLabelValueLength == 0 {
		l.MaxLabelValueLength = DefaultMaxLabelValueLength
	}
	return l
}

func normalizeMetrics(p *Params, add func(string, string, ...any)) {
	if len(p.Metrics) > MaxMetricsPerConfig {
		add("metrics", "%d metrics; at most %d per handler config", len(p.Metrics), MaxMetricsPerConfig)
		return
	}
	fullNames := map[string]int{}
	for i, m := range p.Metrics {
		f := fmt.Sprintf("metrics[%d]", i)
		if m == nil {
			add(f, "must not be null")
			continue
		}
		if strings.TrimSpace(m.InstanceName) == "" {
			add(f+".instance_name", "required")
		} else if strings.ContainsAny(m.InstanceName, " \t\n/") {
			add(f+".instance_name", "%q is not an instance name", m.InstanceName)
		}
		if m.Namespace == "" {
			m.Namespace = DefaultNamespace
		}
		if m.Name == "" {
			m.Name = m.InstanceName
		}
		if m.Description == "" {
			m.Description = m.Name
		}
		switch m.Kind {
		case Params_MetricInfo_GAUGE, Params_MetricInfo_COUNTER, Params_MetricInfo_DISTRIBUTION:
		case Params_MetricInfo_UNSPECIFIED:
			add(f+".kind", "required: GAUGE, COUNTER or DISTRIBUTION")
		default:
			add(f+".kind", "unknown kind %d", m.Kind)
		}
		if _, ok := DurationUnit_name[int32(m.DurationUnit)]; !ok {
			add(f+".duration_unit", "unknown unit %d", m.DurationUnit)
		}
		if len(m.LabelNames) > MaxLabelNames {
			add(f+".label_names", "%d label names; at most %d", len(m.LabelNames), MaxLabelNames)
		}
		seen := map[string]bool{}
		for j, l := range m.LabelNames {
			switch {
			case l == "":
				add(fmt.Sprintf("%s.label_names[%d]", f, j), "must not be empty")
			case seen[l]:
				add(fmt.Sprintf("%s.label_names[%d]", f, j), "%q is listed twice", l)
			}
			seen[l] = true
		}
		if m.Buckets != nil && m.Kind != Params_MetricInfo_DISTRIBUTION && m.Kind != Params_MetricInfo_UNSPECIFIED {
			add(f+".buckets", "only a DISTRIBUTION has buckets")
		}
		if m.Kind == Params_MetricInfo_DISTRIBUTION {
			if _, err := BucketBounds(m.Buckets); err != nil {
				add(f+".buckets", "%v", err)
			}
		}
		full := m.Namespace + "/" + m.Name
		if j, dup := fullNames[full]; dup {
			add(f+".name", "metric %q in namespace %q is already defined by metrics[%d]", m.Name, m.Namespace, j)
		}
		fullNames[full] = i
	}
}

// BucketBounds returns the finite upper bounds of a DISTRIBUTION's buckets,
// computed as Istio's adapter does (client_golang's Linear/ExponentialBuckets
// with n+1 buckets), or DefaultBuckets when b is nil.
func BucketBounds(b *Params_MetricInfo_BucketsDefinition) ([]float64, error) {
	if b == nil || b.Definition == nil {
		return append([]float64(nil), DefaultBuckets...), nil
	}
	switch d := b.Definition.(type) {
	case *Params_MetricInfo_BucketsDefinition_LinearBuckets:
		l := d.LinearBuckets
		if l == nil || l.NumFiniteBuckets <= 0 || l.NumFiniteBuckets > MaxBuckets {
			return nil, fmt.Errorf("linear_buckets.num_finite_buckets must be between 1 and %d", MaxBuckets)
		}
		if !(l.Width > 0) || math.IsInf(l.Width, 0) || math.IsNaN(l.Offset) || math.IsInf(l.Offset, 0) {
			return nil, errors.New("linear_buckets.width must be > 0 and offset finite")
		}
		out := make([]float64, l.NumFiniteBuckets+1)
		for i := range out {
			out[i] = l.Offset + float64(i)*l.Width
		}
		return out, checkBounds("linear_buckets", out)
	case *Params_MetricInfo_BucketsDefinition_ExponentialBuckets:
		e := d.ExponentialBuckets
		if e == nil || e.NumFiniteBuckets <= 0 || e.NumFiniteBuckets > MaxBuckets {
			return nil, fmt.Errorf("exponential_buckets.num_finite_buckets must be between 1 and %d", MaxBuckets)
		}
		if !(e.GrowthFactor > 1) || !(e.Scale > 0) || math.IsInf(e.GrowthFactor, 0) || math.IsInf(e.Scale, 0) {
			return nil, errors.New("exponential_buckets needs growth_factor > 1 and scale > 0")
		}
		out := make([]float64, e.NumFiniteBuckets+1)
		for i, x := 0, e.Scale; i < len(out); i, x = i+1, x*e.GrowthFactor {
			out[i] = x
		}
		return out, checkBounds("exponential_buckets", out)
	case *Params_MetricInfo_BucketsDefinition_ExplicitBuckets:
		if d.ExplicitBuckets == nil || len(d.ExplicitBuckets.Bounds) == 0 || len(d.ExplicitBuckets.Bounds) > MaxBuckets {
			return nil, fmt.Errorf("explicit_buckets.bounds must hold 1 to %d bounds", MaxBuckets)
		}
		out := append([]float64(nil), d.ExplicitBuckets.Bounds...)
		return out, checkBounds("explicit_buckets", out)
	}
	return nil, errors.New("unknown bucket definition")
}

// checkBounds holds computed bounds to what a histogram needs: every bound
// finite, each above the one before. Linear and exponential definitions
// are checked after computing them: offset and width of 1e308 overflow to
// +Inf (whose bucket the histogram already has), and a width too small for
// the offset's precision repeats a bound.
func checkBounds(what string, out []float64) error {
	for i, x := range out {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%s: bound %d is %g: every bound must be finite", what, i, x)
		}
		if i > 0 && !(x > out[i-1]) {
			return fmt.Errorf("%s: bound %d (%g) is not above bound %d (%g): bounds must increase strictly", what, i, x, i-1, out[i-1])
		}
	}
	return nil
}

// ShortInstanceName is an instance's own name without kind and namespace:
// "requestcount" for "requestcount.instance.istio-system" (and for the legacy
// "requestcount.metric.istio-system" of Istio 1.1). A name that is not fully
// qualified is returned unchanged. It works on bytes too, without copying,
// for the request path.
func ShortInstanceName[T ~string | ~[]byte](fq T) T {
	last := lastDot(fq, len(fq))
	if last <= 0 {
		return fq
	}
	kind := lastDot(fq, last)
	if kind <= 0 {
		return fq
	}
	return fq[:kind]
}

func lastDot[T ~string | ~[]byte](s T, end int) int {
	for i := end - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}

// Redacted is a copy of p with every secret replaced, safe to log or show.
// Secrets are the fields tagged `secret:"true"` in config.proto.
func Redacted(p *Params) *Params {
	if p == nil {
		return nil
	}
	out := &Params{}
	data, err := p.Marshal()
	if err != nil || out.Unmarshal(data) != nil {
		return &Params{}
	}
	redact(reflect.ValueOf(out).Elem())
	return out
}

// RedactedValue is what a secret is replaced with.
const RedactedValue = "[REDACTED]"

func redact(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			redact(v.Elem())
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			redact(v.Index(i))
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if t.Field(i).Tag.Get("secret") == "true" && f.Kind() == reflect.String {
				if f.String() != "" {
					f.SetString(RedactedValue)
				}
				continue
			}
			// URLs may carry credentials in their user info or query.
			if name := t.Field(i).Name; (name == "Url" || name == "Endpoint") && f.Kind() == reflect.String && f.CanSet() {
				if f.String() != "" {
					f.SetString(RedactURL(f.String()))
				}
				continue
			}
			if f.CanSet() || f.Kind() == reflect.Pointer || f.Kind() == reflect.Slice || f.Kind() == reflect.Interface {
				redact(f)
			}
		}
	}
}
