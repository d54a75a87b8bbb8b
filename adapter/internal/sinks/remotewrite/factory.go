// Package remotewrite pushes the series of handler configs' metrics to a
// Prometheus remote-write 1.0 receiver: the cumulative value of every series
// each interval, stale markers for series that end, in time order, through
// the shared bounded send queue and retrying HTTP client.
package remotewrite

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/certpool"
	"github.com/meshmetrics/meshmetrics/adapter/internal/secretfile"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/promnaming"
	"github.com/meshmetrics/meshmetrics/config"
)

// keyPrefix starts the key (and name) of every remote-write sink.
const keyPrefix = "remote_write:"

// Factory builds remote-write sinks, one per distinct remote_write block.
type Factory struct {
	env sinks.Env
	// salt keys the digest of secrets in sink keys, so that a key (which
	// shows up in logs and metric labels) reveals nothing about them.
	salt []byte
}

// NewFactory makes the remote-write factory. Keys digest secrets under
// env.KeySalt (the spool's when there is one, so that a destination keeps
// its key and spool directory across restarts).
func NewFactory(env sinks.Env) sinks.Factory {
	salt := env.KeySalt
	if salt == nil {
		salt = make([]byte, 32)
		_, _ = rand.Read(salt) // a partial wiring (tests) still gets a secret salt
	}
	return &Factory{env: env, salt: salt}
}

// Key implements sinks.Factory: "remote_write:<url>#<digest>", where url has
// any password redacted and digest covers the whole block (secrets through a
// keyed hash) plus the replica name when a replica label is set.
func (f *Factory) Key(p *config.Params) string {
	if !f.Configured(p) || p.Prometheus.RemoteWrite.Url == "" {
		return ""
	}
	rw := p.Prometheus.RemoteWrite
	public, secrets := splitSecrets(rw)
	h := sha256.New()
	b, _ := json.Marshal(public) // sorts map keys: equal blocks, equal bytes
	h.Write(b)
	if rw.ReplicaLabel != "" {
		fmt.Fprintf(h, "\x00replica=%s", f.env.Replica)
	}
	if len(secrets) > 0 {
		m := hmac.New(sha256.New, f.salt)
		for _, s := range secrets {
			fmt.Fprintf(m, "%d:%s", len(s), s)
		}
		h.Write(m.Sum(nil))
	}
	return keyPrefix + redactURL(rw.Url) + "#" + hex.EncodeToString(h.Sum(nil)[:6])
}

// splitSecrets returns a copy of rw without its secrets (password, the URL's
// password, sensitive header values), and the secrets in a stable order.
func splitSecrets(rw *config.RemoteWrite) (config.RemoteWrite, []string) {
	public := *rw
	var secrets []string
	// The URL's password or credentials in its query: the key shows it
	// redacted, the digest covers it through the keyed hash.
	if shown := config.RedactURL(rw.Url); shown != rw.Url {
		secrets = append(secrets, "url:"+rw.Url)
		public.Url = shown
	}
	if rw.BasicAuth != nil {
		ba := *rw.BasicAuth
		if ba.Password != "" {
			secrets = append(secrets, "password:"+ba.Password)
			ba.Password = ""
		}
		public.BasicAuth = &ba
	}
	if len(rw.Headers) > 0 {
		public.Headers = map[string]string{}
		names := make([]string, 0, len(rw.Headers))
		for k := range rw.Headers {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if sensitiveHeader(k) {
				secrets = append(secrets, "header:"+k+"="+rw.Headers[k])
				public.Headers[k] = "secret"
			} else {
				public.Headers[k] = rw.Headers[k]
			}
		}
	}
	return public, secrets
}

// sensitiveHeader says whether a header's value may be a credential: it is
// then kept out of keys and logs.
func sensitiveHeader(name string) bool { return config.SensitiveName(name) }

// redactURL is the URL as it may be shown (config.RedactURL).
func redactURL(raw string) string { return config.RedactURL(raw) }

// Check implements sinks.Factory: the metrics must have valid Prometheus
// names that do not clash with the external or replica labels, and the TLS
// and auth settings must be usable.
func (f *Factory) Check(p *config.Params, metrics []*sinks.Metric) error {
	rw := p.Prometheus.RemoteWrite
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("prometheus.remote_write: "+format, args...))
	}
	if len(p.Metrics) == 0 {
		add("needs a `metrics` list: Prometheus series need fixed names and label names")
	}
	if err := promnaming.CheckAll(metrics); err != nil {
		add("%v", err)
	}
	external := map[string]string{}
	for name, v := range rw.ExternalLabels {
		switch {
		case !validLabelName(name):
			add("external_labels: %q is not a valid label name", name)
		case v == "":
			add("external_labels[%s]: empty value (an empty label is no label)", name)
		}
		external[name] = "external_labels"
	}
	if rw.ReplicaLabel != "" {
		if !validLabelName(rw.ReplicaLabel) {
			add("replica_label: %q is not a valid label name", rw.ReplicaLabel)
		}
		if _, dup := external[rw.ReplicaLabel]; dup {
			add("replica_label %q is also an external label", rw.ReplicaLabel)
		}
		external[rw.ReplicaLabel] = "replica_label"
	}
	for i, m := range metrics {
		names, err := promnaming.Resolve(m)
		if err != nil {
			continue // reported by CheckAll
		}
		for _, l := range names.Labels {
			if field, dup := external[l]; dup {
				add("metrics[%d] (%s): label %q is also set by %s", i, names.Name, l, field)
			}
		}
	}
	if rw.BasicAuth != nil && rw.BearerTokenFile != "" {
		add("set basic_auth or bearer_token_file, not both")
	}
	for k := range rw.Headers {
		if strings.EqualFold(k, "authorization") && (rw.BasicAuth != nil || rw.BearerTokenFile != "") {
			add("headers: Authorization conflicts with basic_auth/bearer_token_file")
		}
	}
	if _, err := tlsConfig(rw); err != nil {
		add("%v", err)
	}
	// New opens the credential files: they must be readable now.
	if rw.BasicAuth != nil && rw.BasicAuth.PasswordFile != "" {
		if _, err := secretfile.Read(rw.BasicAuth.PasswordFile); err != nil {
			add("basic_auth.password_file: %v", err)
		}
	}
	if rw.BearerTokenFile != "" {
		if _, err := secretfile.Read(rw.BearerTokenFile); err != nil {
			add("bearer_token_file: %v", err)
		}
	}
	return errors.Join(errs...)
}

func validLabelName(s string) bool {
	return s != "" && promnaming.LabelName(s) == s && !strings.HasPrefix(s, "__")
}

// tlsConfig is the TLS setup of rw, nil when it has none.
func tlsConfig(rw *config.RemoteWrite) (*tls.Config, error) {
	if rw.CaFile == "" && !rw.InsecureSkipVerify {
		return nil, nil
	}
	c := &tls.Config{InsecureSkipVerify: rw.InsecureSkipVerify} //nolint:gosec // opt-in, for tests
	if rw.CaFile != "" {
		pool, err := certpool.FromFile(rw.CaFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// New implements sinks.Factory.
func (f *Factory) New(p *config.Params) (sinks.Sink, error) {
	return newSink(f.Key(p), p.Prometheus.RemoteWrite, f.env)
}
