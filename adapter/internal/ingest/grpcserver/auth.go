package grpcserver

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/secretfile"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// SPIFFEAllowList refuses TLS clients whose certificate carries none of the
// allowed SPIFFE IDs as a URI SAN. Mixer's client certificate carries its
// service account's ID (spiffe://cluster.local/ns/istio-system/sa/istio-mixer-service-account).
type SPIFFEAllowList struct {
	ids map[string]bool
}

// NewSPIFFEAllowList accepts exactly the given IDs.
func NewSPIFFEAllowList(ids []string) (*SPIFFEAllowList, error) {
	a := &SPIFFEAllowList{ids: map[string]bool{}}
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if id == "" {
			continue
		}
		if !strings.HasPrefix(id, "spiffe://") {
			return nil, fmt.Errorf("allowed SPIFFE ID %q does not start with spiffe://", id)
		}
		a.ids[id] = true
	}
	if len(a.ids) == 0 {
		return nil, errors.New("the SPIFFE allow-list is empty")
	}
	return a, nil
}

// verify is a tls.Config.VerifyConnection hook, run after the chain checks.
func (a *SPIFFEAllowList) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errNoClientCertificate
	}
	if a.allowed(cs.PeerCertificates[0]) {
		return nil
	}
	return errSPIFFENotAllowed
}

// The allow-list's refusals, counted by the handshake observer
// (observedCreds) like every other failed handshake.
var (
	errNoClientCertificate = errors.New("a client certificate is required")
	errSPIFFENotAllowed    = errors.New("the client certificate carries no allowed SPIFFE ID")
)

func (a *SPIFFEAllowList) allowed(c *x509.Certificate) bool {
	for _, u := range c.URIs {
		if a.ids[u.String()] {
			return true
		}
	}
	return false
}

// TokenCheck refuses calls that lack the shared token Mixer's `tls`
// authentication sends: `auth_header: PLAIN` → `authorization: <token>`,
// `BEARER` → `authorization: Bearer <token>`, `custom_header: x` → `x:
// <token>`. The token file is kept by secretfile: looked at again at most
// every second, re-read when it changes, the last good token kept when a
// reload fails. Comparison is in constant time; the token never appears in
// an error or a log.
type TokenCheck struct {
	file   *secretfile.File
	header string
	// OnRefuse is told about each refused call.
	OnRefuse func(reason string)
}

// NewTokenCheck reads the token file once, failing if it is unusable.
// Every token loaded is registered with secrets (may be nil); failed
// reloads are logged through limiter (may be nil).
func NewTokenCheck(path, header string, secrets *logging.Secrets, limiter *logging.Limiter) (*TokenCheck, error) {
	if header == "" {
		header = "authorization"
	}
	// Mixer sends the file verbatim, trailing newline included; secretfile
	// trims it, and check trims what the caller sends.
	f, err := secretfile.Open(path, secretfile.Options{What: "auth token file", Secrets: secrets, Limiter: limiter, CheckEvery: reloadEvery})
	if err != nil {
		return nil, err
	}
	return &TokenCheck{file: f, header: strings.ToLower(header), OnRefuse: func(string) {}}, nil
}

// Reload re-reads the token file now (SIGHUP), keeping the last good token
// when it fails.
func (t *TokenCheck) Reload() error {
	_, err := t.file.Reload()
	return err
}

// Token is the current token.
func (t *TokenCheck) Token() string { return t.file.Value() }

func (t *TokenCheck) current() []byte { return []byte(t.file.Value()) }

// check reports whether a stream's metadata carries the token. It runs in
// the tap handle (admission.go), before any message of the stream is read.
func (t *TokenCheck) check(md metadata.MD) error {
	values := md.Get(t.header)
	if len(values) == 0 {
		t.OnRefuse(telemetry.AuthMissingToken)
		return status.Errorf(codes.Unauthenticated, "no %s header: this adapter requires Mixer's tls authentication token", t.header)
	}
	want := t.current()
	for _, v := range values {
		v = strings.TrimSpace(v)
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			v = strings.TrimSpace(v[7:])
		}
		if subtle.ConstantTimeCompare([]byte(v), want) == 1 {
			return nil
		}
	}
	t.OnRefuse(telemetry.AuthWrongToken)
	return status.Errorf(codes.Unauthenticated, "the %s header does not carry the expected token", t.header)
}
