package librato

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// Defaults of the Options: what handler params do not set.
const (
	// DefaultMinBackoff and DefaultMaxBackoff bound the exponential backoff
	// between attempts of one request (a Retry-After or an exhausted
	// rate limit overrides them). The request gives up after the handler's
	// librato.max_retry_elapsed.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
	// DefaultUserAgent is stored by the service as the metric's
	// created_by_ua (backends.md §1).
	DefaultUserAgent = "meshmetrics/librato"
	// DefaultFallbackReplica names the replica when the adapter was given
	// none and the host name is unknown.
	DefaultFallbackReplica = sinks.FallbackReplica
)

// Options tune a Factory beyond handler params: process-wide choices and
// test hooks.
type Options struct {
	MinBackoff, MaxBackoff time.Duration
	// Gzip compresses request bodies. The service's support is implied by
	// the official Go client but undocumented (§1), so it is off by default.
	Gzip bool
	// Transport replaces the HTTP transport (tests, proxies).
	Transport http.RoundTripper
	UserAgent string

	// times is the Factory's record of the times its sinks sent, by
	// destination (set by NewFactoryWith).
	times *sentTimes
}

func (o Options) withDefaults() Options {
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if o.times == nil {
		o.times = newSentTimes()
	}
	return o
}

// Factory builds Librato sinks from handler params: one per distinct
// librato block.
type Factory struct {
	env  sinks.Env
	opts Options
}

// NewFactory is the Factory the adapter wires, with default Options.
func NewFactory(env sinks.Env) sinks.Factory { return NewFactoryWith(env, Options{}) }

// NewFactoryWith is NewFactory with Options.
func NewFactoryWith(env sinks.Env, o Options) *Factory {
	return &Factory{env: env.WithDefaults(), opts: o.withDefaults()}
}

// Configured implements sinks.Factory: p has a librato block (or the seed
// adapter's fields, which config.Normalize moved into one).
func (f *Factory) Configured(p *config.Params) bool { return p.Librato != nil }

// Normalize implements sinks.Factory: the librato block's defaults and
// rules (config.go).
func (f *Factory) Normalize(p *config.Params) config.FieldErrors {
	if p.Librato == nil {
		return nil
	}
	return normalize(p.Librato)
}

// Key implements sinks.Factory: "librato:<url>#<api>#<digest>", where the
// digest covers the whole librato block, so that any change to it builds a
// new sink (the old one flushes as its last handler goes). The URL is shown
// without user info and with credentials in its query redacted; the token
// only enters through the digest.
func (f *Factory) Key(p *config.Params) string {
	if p.Librato == nil {
		return ""
	}
	l := p.Librato
	u := config.RedactURL(l.Url)
	if parsed, err := url.Parse(u); err == nil {
		parsed.User = nil
		u = parsed.String()
	}
	// fmt prints maps sorted, so equal blocks digest equally; the block may
	// hold the token, hence the keyed digest.
	digest := sinks.KeyDigest(f.env.KeySalt, []byte(fmt.Sprintf("%+v", *l)))
	return "librato:" + u + "#" + l.Api.String() + "#" + digest
}

// Check implements sinks.Factory. Besides the normalized params' own rules it
// checks what only this sink knows: the token can be loaded, constant tags,
// the replica tag and the source follow the API's rules, and no two metrics
// of the config map to one Librato name.
func (f *Factory) Check(p *config.Params, metrics []*sinks.Metric) error {
	l := p.Librato
	if l == nil {
		return nil
	}
	var errs config.FieldErrors
	add := func(field, format string, args ...any) {
		errs = append(errs, config.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if u, err := url.Parse(l.Url); err == nil && u.User != nil {
		add("librato.url", "must not carry credentials: use email and token_path")
	}
	if _, err := loadToken(l); err != nil {
		add("librato.token", "%s", strings.TrimPrefix(err.Error(), errNoToken.Error()+": "))
	}
	if l.Api == config.LibratoParams_LEGACY {
		if l.Source != "" && !ValidSource(l.Source) {
			add("librato.source", "%q is not a valid source: 1-255 of A-Za-z0-9.:_- and not %q", l.Source, ReservedSource)
		}
	}
	fixed := len(l.Tags)
	for k, v := range l.Tags {
		if !ValidTagName(k) {
			add("librato.tags", "tag name %q must match ^[-.:_\\w]{1,64}$", k)
		}
		if !ValidTagValue(v) {
			add("librato.tags", "value %q of tag %q must match ^[-.:_?\\\\/\\w ]{1,255}$", v, k)
		}
	}
	if l.ReplicaTag != "" {
		fixed++
		if !ValidTagName(l.ReplicaTag) {
			add("librato.replica_tag", "%q must match ^[-.:_\\w]{1,64}$", l.ReplicaTag)
		}
		for k := range l.Tags {
			if strings.EqualFold(k, l.ReplicaTag) {
				add("librato.replica_tag", "%q is also a constant tag", l.ReplicaTag)
			}
		}
	}
	if fixed > MaxTagsPerMeasurement {
		add("librato.tags", "%d constant tags (with replica_tag) exceed the API's %d tags per measurement", fixed, MaxTagsPerMeasurement)
	}
	names := map[string]int{}
	for i, m := range metrics {
		name, r := metricName(m)
		if r.Dropped() {
			add(fmt.Sprintf("metrics[%d].name", i), "is empty")
			continue
		}
		if j, dup := names[strings.ToLower(name)]; dup {
			add(fmt.Sprintf("metrics[%d].name", i), "maps to the Librato name %q, as metrics[%d] does (names are case-insensitive)", name, j)
		}
		names[strings.ToLower(name)] = i
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// New implements sinks.Factory.
func (f *Factory) New(p *config.Params) (sinks.Sink, error) {
	if p.Librato == nil {
		return nil, fmt.Errorf("%w: no librato block", config.ErrInvalid)
	}
	return newSink(f.Key(p), p.Librato, f.env, f.opts)
}
