package remotewrite

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/meshmetrics/meshmetrics/config"
)

// The prometheus.remote_write block of handler params: its defaults and
// rules live here, and nowhere else applies them. The default values are
// named in config/defaults.go, where the params reference (config/gendoc)
// reads them.

const field = "prometheus.remote_write."

// normalize fills in rw's defaults and reports what is wrong, by field.
// normalize(normalize(rw)) leaves rw as it was.
func normalize(rw *config.RemoteWrite) config.FieldErrors {
	var errs config.FieldErrors
	add := func(name, format string, args ...any) {
		errs = append(errs, config.FieldError{Field: field + name, Message: fmt.Sprintf(format, args...)})
	}
	if rw.Url == "" {
		add("url", "required")
	} else if u, err := url.Parse(rw.Url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("url", "%q is not an http(s) URL", config.RedactURL(rw.Url))
	}
	if rw.Interval == 0 {
		rw.Interval = config.DefaultRemoteWriteInterval
	}
	if rw.MaxSamplesPerSend == 0 {
		rw.MaxSamplesPerSend = config.DefaultRemoteWriteMaxSamples
	}
	if rw.Capacity == 0 {
		rw.Capacity = config.DefaultRemoteWriteCapacity
	}
	if rw.Timeout == 0 {
		rw.Timeout = config.DefaultRemoteWriteTimeout
	}
	if rw.MinBackoff == 0 {
		rw.MinBackoff = config.DefaultRemoteWriteMinBackoff
	}
	if rw.MaxBackoff == 0 {
		rw.MaxBackoff = config.DefaultRemoteWriteMaxBackoff
	}
	if rw.MaxRetryElapsed == 0 {
		rw.MaxRetryElapsed = config.DefaultRemoteWriteMaxRetryElapse
	}
	for _, d := range []struct {
		name  string
		value int64
	}{{"interval", int64(rw.Interval)}, {"timeout", int64(rw.Timeout)}, {"min_backoff", int64(rw.MinBackoff)},
		{"max_backoff", int64(rw.MaxBackoff)}, {"max_retry_elapsed", int64(rw.MaxRetryElapsed)}} {
		if d.value < 0 {
			add(d.name, "must be > 0")
		}
	}
	if rw.MinBackoff > rw.MaxBackoff {
		add("min_backoff", "must not exceed max_backoff")
	}
	if rw.MaxSamplesPerSend < 0 {
		add("max_samples_per_send", "must be > 0")
	}
	if rw.Capacity < rw.MaxSamplesPerSend {
		add("capacity", "must be at least max_samples_per_send (%d)", rw.MaxSamplesPerSend)
	}
	if ba := rw.BasicAuth; ba != nil {
		if ba.Username == "" {
			add("basic_auth.username", "required")
		}
		if ba.Password != "" && ba.PasswordFile != "" {
			add("basic_auth.password", "set password or password_file, not both")
		}
	}
	for k := range rw.Headers {
		switch strings.ToLower(k) {
		case "content-encoding", "content-type", "user-agent", "x-prometheus-remote-write-version":
			add("headers", "%q is set by the remote-write protocol and cannot be overridden", k)
		}
	}
	return errs
}

// Configured implements sinks.Factory: p has a remote_write block.
func (f *Factory) Configured(p *config.Params) bool {
	return p.Prometheus != nil && p.Prometheus.RemoteWrite != nil
}

// Normalize implements sinks.Factory.
func (f *Factory) Normalize(p *config.Params) config.FieldErrors {
	if !f.Configured(p) {
		return nil
	}
	return normalize(p.Prometheus.RemoteWrite)
}
