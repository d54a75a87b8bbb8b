package librato

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/meshmetrics/meshmetrics/config"
)

// The librato block of handler params: its defaults and rules live here,
// and nowhere else applies them. The default values are named in
// config/defaults.go, where the params reference (config/gendoc) reads them.

// normalize fills in l's defaults and reports what is wrong, by field.
// normalize(normalize(l)) leaves l as it was.
func normalize(l *config.LibratoParams) config.FieldErrors {
	var errs config.FieldErrors
	add := func(field, format string, args ...any) {
		errs = append(errs, config.FieldError{Field: "librato." + field, Message: fmt.Sprintf(format, args...)})
	}
	if l.Url == "" {
		l.Url = config.DefaultLibratoURL
	}
	if u, err := url.Parse(l.Url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("url", "%q is not an http(s) URL", config.RedactURL(l.Url))
	}
	sources := 0
	for _, s := range []string{l.Token, l.TokenPath, l.TokenEnv} {
		if s != "" {
			sources++
		}
	}
	switch {
	case sources == 0:
		add("token_path", "a token is required: set token_path (a mounted Secret), token_env or token")
	case sources > 1:
		add("token", "set only one of token, token_path and token_env")
	}
	if l.Period == 0 {
		l.Period = config.DefaultLibratoPeriod
	}
	if l.Period < config.MinLibratoPeriod {
		add("period", "must be at least %s", config.MinLibratoPeriod)
	} else if l.Period%config.MinLibratoPeriod != 0 {
		add("period", "must be a whole number of seconds (Librato's period is in seconds)")
	}
	maxPerRequest := int32(MaxMeasurementsPerRequest)
	if l.Api == config.LibratoParams_LEGACY {
		maxPerRequest = MaxLegacyMeasurementsPerRequest
	} else if l.Api != config.LibratoParams_TAGGED {
		add("api", "unknown api %d", l.Api)
	}
	if l.MaxMeasurementsPerRequest == 0 {
		l.MaxMeasurementsPerRequest = maxPerRequest
	}
	if l.MaxMeasurementsPerRequest < 0 || l.MaxMeasurementsPerRequest > maxPerRequest {
		add("max_measurements_per_request", "must be between 1 and %d", maxPerRequest)
	}
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = config.DefaultLibratoMaxRequestBytes
	}
	if l.MaxRequestBytes < 1024 {
		add("max_request_bytes", "must be at least 1024")
	}
	if l.QueueSize == 0 {
		l.QueueSize = config.DefaultLibratoQueueSize
	}
	if l.QueueSize < 0 {
		add("queue_size", "must be > 0")
	}
	if l.RequestTimeout == 0 {
		l.RequestTimeout = config.DefaultLibratoRequestTimeout
	}
	if l.RequestTimeout < 0 {
		add("request_timeout", "must be > 0")
	}
	if l.MaxRetryElapsed == 0 {
		l.MaxRetryElapsed = config.DefaultLibratoMaxRetryElapsed
	}
	if l.MaxRetryElapsed < 0 {
		add("max_retry_elapsed", "must be > 0")
	}
	return errs
}

// settings are a sink's normalized librato block, resolved for sending.
type settings struct {
	endpoint       string
	legacy         bool
	email          string
	period         int64 // seconds
	tags           map[string]string
	source         string
	maxUnits       int
	maxBytes       int
	queueSize      int
	requestTimeout time.Duration
	maxElapsed     time.Duration
}

// settingsOf resolves a normalized block; replica names this process.
func settingsOf(l *config.LibratoParams, replica string) settings {
	cfg := settings{
		endpoint:       endpoint(l.Url, MeasurementsPath),
		legacy:         l.Api == config.LibratoParams_LEGACY,
		email:          l.Email,
		period:         int64(l.Period / time.Second),
		tags:           map[string]string{},
		maxUnits:       int(l.MaxMeasurementsPerRequest),
		maxBytes:       int(l.MaxRequestBytes),
		queueSize:      int(l.QueueSize),
		requestTimeout: l.RequestTimeout,
		maxElapsed:     l.MaxRetryElapsed,
	}
	if cfg.legacy {
		cfg.endpoint = endpoint(l.Url, LegacyMetricsPath)
		cfg.source, _ = SanitizeSource(cmpOr(l.Source, replica))
	} else {
		for k, v := range l.Tags {
			// Check validated them; this only lower-cases, as the service does.
			k, _ = SanitizeTagName(k)
			cfg.tags[k], _ = SanitizeTagValue(v)
		}
		if l.ReplicaTag != "" {
			k, _ := SanitizeTagName(l.ReplicaTag)
			v, r := SanitizeTagValue(replica)
			if r.Dropped() {
				v = DefaultFallbackReplica
			}
			cfg.tags[k] = v
		}
	}
	// A request must fit the send queue, or Put would drop it whole.
	cfg.maxUnits = min(cfg.maxUnits, cfg.queueSize)
	return cfg
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// endpoint is an API path under the configured URL, whose query string (a
// proxy's parameters, say) stays a query string.
func endpoint(base, apiPath string) string {
	u, err := config.JoinURLPath(base, apiPath)
	if err != nil {
		return strings.TrimRight(base, "/") + apiPath // Normalize refuses URLs that do not parse
	}
	return u
}
