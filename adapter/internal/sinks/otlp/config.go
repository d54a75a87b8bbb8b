package otlp

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/meshmetrics/meshmetrics/config"
)

// The otlp block of handler params: its defaults and rules live here, and
// nowhere else applies them. The default values are named in
// config/defaults.go, where the params reference (config/gendoc) reads them.

// The protocols of the otlp block, as the OTLP exporter specification
// names them (OTEL_EXPORTER_OTLP_PROTOCOL).
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// MetricsPath is the path an http/protobuf endpoint without one gets.
const MetricsPath = "/v1/metrics"

// ServiceInstanceID is the resource attribute that carries the replica
// name, so that replicas never write the same series.
const ServiceInstanceID = "service.instance.id"

// ServiceName is the resource attribute that names the service
// (config.DefaultOtlpServiceName unless resource_attributes sets it).
const ServiceName = "service.name"

// maxRequestBytesCap bounds max_request_bytes: nothing a config says may
// make the adapter build unbounded messages.
const maxRequestBytesCap = 64 << 20

// normalize fills in o's defaults and reports what is wrong, by field.
// normalize(normalize(o)) leaves o as it was.
func normalize(o *config.OtlpParams) config.FieldErrors {
	var errs config.FieldErrors
	add := func(name, format string, args ...any) {
		errs = append(errs, config.FieldError{Field: "otlp." + name, Message: fmt.Sprintf(format, args...)})
	}
	if o.Protocol == "" {
		o.Protocol = config.DefaultOtlpProtocol
	}
	if o.Protocol != ProtocolGRPC && o.Protocol != ProtocolHTTP {
		add("protocol", "%q is neither %q nor %q", o.Protocol, ProtocolGRPC, ProtocolHTTP)
	} else if o.Endpoint == "" {
		add("endpoint", "required")
	} else if _, err := parseEndpoint(o); err != nil {
		add("endpoint", "%v", err)
	}
	for _, d := range []struct {
		v    *time.Duration
		def  time.Duration
		name string
	}{
		{&o.Interval, config.DefaultOtlpInterval, "interval"},
		{&o.Timeout, config.DefaultOtlpTimeout, "timeout"},
		{&o.MinBackoff, config.DefaultOtlpMinBackoff, "min_backoff"},
		{&o.MaxBackoff, config.DefaultOtlpMaxBackoff, "max_backoff"},
		{&o.MaxRetryElapsed, config.DefaultOtlpMaxRetryElapsed, "max_retry_elapsed"},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			add(d.name, "must be > 0")
		}
	}
	if o.MinBackoff > o.MaxBackoff {
		add("min_backoff", "must not exceed max_backoff")
	}
	if o.MaxDataPointsPerRequest == 0 {
		o.MaxDataPointsPerRequest = config.DefaultOtlpMaxDataPoints
	}
	if o.MaxDataPointsPerRequest < 0 {
		add("max_data_points_per_request", "must be > 0")
	}
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = config.DefaultOtlpMaxRequestBytes
	}
	if o.MaxRequestBytes < 1024 || o.MaxRequestBytes > maxRequestBytesCap {
		add("max_request_bytes", "must be between 1024 and %d", maxRequestBytesCap)
	}
	if o.QueueSize == 0 {
		o.QueueSize = config.DefaultOtlpQueueSize
	}
	if o.QueueSize < o.MaxDataPointsPerRequest {
		add("queue_size", "must be at least max_data_points_per_request (%d)", o.MaxDataPointsPerRequest)
	}
	if o.Compression != config.OtlpParams_GZIP && o.Compression != config.OtlpParams_NONE {
		add("compression", "unknown compression %d", o.Compression)
	}
	if o.Temporality != config.OtlpParams_CUMULATIVE && o.Temporality != config.OtlpParams_DELTA {
		add("temporality", "unknown temporality %d", o.Temporality)
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		add("cert_file", "cert_file and key_file go together")
	}
	if o.Insecure && (o.CaFile != "" || o.CertFile != "" || o.InsecureSkipVerify) {
		add("insecure", "plaintext excludes ca_file, cert_file, key_file and insecure_skip_verify")
	}
	seen := map[string]string{}
	for k := range o.Headers {
		checkHeader(k, "headers", seen, add)
	}
	for i, h := range o.HeaderFiles {
		f := fmt.Sprintf("header_files[%d]", i)
		if h == nil {
			add(f, "empty entry")
			continue
		}
		checkHeader(h.Name, f+".name", seen, add)
		if h.Path == "" {
			add(f+".path", "required")
		}
	}
	for k := range o.ResourceAttributes {
		switch k {
		case "":
			add("resource_attributes", "empty attribute name")
		case ServiceInstanceID:
			add("resource_attributes", "%s is the replica name (--replica) and cannot be set", ServiceInstanceID)
		}
	}
	return errs
}

// checkHeader refuses empty, invalid, duplicate and protocol header names.
func checkHeader(name, field string, seen map[string]string, add func(string, string, ...any)) {
	lower := strings.ToLower(name)
	switch {
	case !validHeaderName(name):
		add(field, "%q is not a valid header name", name)
		return
	case reservedHeader(lower):
		add(field, "%q is set by the OTLP protocol and cannot be overridden", name)
		return
	}
	if other, dup := seen[lower]; dup {
		add(field, "header %q is also set by %s", name, other)
		return
	}
	seen[lower] = field
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '-' || c == '_' || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// reservedHeader: what the protocol sets, and gRPC's own metadata.
func reservedHeader(lower string) bool {
	switch lower {
	case "content-type", "content-encoding", "content-length", "user-agent", "te", "host", "connection", "transfer-encoding":
		return true
	}
	return strings.HasPrefix(lower, "grpc-") || strings.HasPrefix(lower, ":")
}

// sensitiveHeader says whether a header's value may be a credential: it is
// then registered as a secret and kept out of keys.
func sensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie":
		return true
	}
	for _, w := range []string{"token", "key", "secret", "password", "auth"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// endpoint is where a sink sends: a URL (http/protobuf) or a gRPC target.
type endpoint struct {
	// url is the POST URL (http/protobuf).
	url string
	// target is host:port (grpc).
	target string
	// plaintext: no TLS.
	plaintext bool
}

// parseEndpoint reads o.Endpoint for o.Protocol. TLS is on unless
// o.Insecure; a scheme, when given, must agree.
func parseEndpoint(o *config.OtlpParams) (endpoint, error) {
	raw := o.Endpoint
	if o.Protocol == ProtocolGRPC && !strings.Contains(raw, "://") {
		host, port, err := net.SplitHostPort(raw)
		if err != nil || host == "" || port == "" {
			return endpoint{}, fmt.Errorf("%q is not host:port or an http(s) URL", raw)
		}
		return endpoint{target: raw, plaintext: o.Insecure}, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return endpoint{}, fmt.Errorf("%q is not an http(s) URL", redactURL(raw))
	}
	if u.User != nil {
		return endpoint{}, fmt.Errorf("must not carry credentials: use headers or header_files")
	}
	switch {
	case u.Scheme == "http" && !o.Insecure:
		return endpoint{}, fmt.Errorf("%q is plaintext: set insecure: true to send without TLS", redactURL(raw))
	case u.Scheme == "https" && o.Insecure:
		return endpoint{}, fmt.Errorf("%q is https but insecure is set", redactURL(raw))
	}
	if o.Protocol == ProtocolGRPC {
		if u.Path != "" && u.Path != "/" {
			return endpoint{}, fmt.Errorf("a gRPC endpoint has no path: %q", redactURL(raw))
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
		}
		return endpoint{target: host, plaintext: o.Insecure}, nil
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = MetricsPath // the query string, if any, stays one
	}
	return endpoint{url: u.String(), plaintext: o.Insecure}, nil
}

// redactURL is the endpoint as it may be shown: a password and credentials
// in the query redacted (config.RedactURL).
func redactURL(raw string) string { return config.RedactURL(raw) }

// settings are a sink's normalized otlp block, resolved for sending.
type settings struct {
	protocol    string
	endpoint    endpoint
	gzip        bool
	delta       bool
	interval    time.Duration
	maxPoints   int
	maxBytes    int
	queueSize   int
	timeout     time.Duration
	retryMin    time.Duration
	retryMax    time.Duration
	retryMaxDur time.Duration
	resource    map[string]string
}

// settingsOf resolves a normalized block; replica names this process.
func settingsOf(o *config.OtlpParams, replica string) (settings, error) {
	ep, err := parseEndpoint(o)
	if err != nil {
		return settings{}, fmt.Errorf("otlp.endpoint: %w", err)
	}
	s := settings{
		protocol:    o.Protocol,
		endpoint:    ep,
		gzip:        o.Compression == config.OtlpParams_GZIP,
		delta:       o.Temporality == config.OtlpParams_DELTA,
		interval:    o.Interval,
		maxPoints:   int(o.MaxDataPointsPerRequest),
		maxBytes:    int(o.MaxRequestBytes),
		queueSize:   int(o.QueueSize),
		timeout:     o.Timeout,
		retryMin:    o.MinBackoff,
		retryMax:    o.MaxBackoff,
		retryMaxDur: o.MaxRetryElapsed,
		resource:    map[string]string{ServiceName: config.DefaultOtlpServiceName},
	}
	for k, v := range o.ResourceAttributes {
		s.resource[k] = v
	}
	s.resource[ServiceInstanceID] = replica
	return s, nil
}
