package grpcserver

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
// <token>`. The token file is re-read when it changes. Comparison is in
// constant time; the token never appears in an error or a log.
type TokenCheck struct {
	path   string
	header string
	// OnRefuse is told about each refused call.
	OnRefuse func(reason string)
	// OnLoad is told each token loaded after the first (rotations), so
	// that it can be registered for redaction like the first.
	OnLoad func(token string)

	mu      sync.Mutex
	checked time.Time
	stamp   time.Time
	token   []byte
}

// NewTokenCheck reads the token file once, failing if it is unusable.
func NewTokenCheck(path, header string) (*TokenCheck, error) {
	if header == "" {
		header = "authorization"
	}
	t := &TokenCheck{path: path, header: strings.ToLower(header), OnRefuse: func(string) {}, OnLoad: func(string) {}}
	if err := t.load(); err != nil {
		return nil, err
	}
	return t, nil
}

// Token is the current token, for registering it as a secret.
func (t *TokenCheck) Token() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.token)
}

func (t *TokenCheck) load() error {
	st, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("auth token file: %w", err)
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("auth token file: %w", err)
	}
	// Mixer sends the file verbatim, trailing newline included; compare
	// without surrounding whitespace on both sides.
	tok := []byte(strings.TrimSpace(string(b)))
	if len(tok) == 0 {
		return fmt.Errorf("auth token file %s is empty", t.path)
	}
	t.token, t.stamp = tok, st.ModTime()
	return nil
}

func (t *TokenCheck) current() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); now.Sub(t.checked) >= reloadEvery {
		t.checked = now
		if st, err := os.Stat(t.path); err == nil && !st.ModTime().Equal(t.stamp) {
			prev := t.token
			if t.load() != nil {
				t.token = prev // keep serving with the last good token
			} else if string(prev) != string(t.token) {
				t.OnLoad(string(t.token))
			}
		}
	}
	return t.token
}

// check reports whether the call's metadata carries the token.
func (t *TokenCheck) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get(t.header)
	if len(values) == 0 {
		t.OnRefuse("missing_token")
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
	t.OnRefuse("wrong_token")
	return status.Errorf(codes.Unauthenticated, "the %s header does not carry the expected token", t.header)
}

// unary is the interceptor; health checks pass, kubelet probes carry no token.
func (t *TokenCheck) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") {
		return next(ctx, req)
	}
	if err := t.check(ctx); err != nil {
		return nil, err
	}
	return next(ctx, req)
}

// stream is the interceptor of streams (Envoy's access logs); the health
// service's Watch passes.
func (t *TokenCheck) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") {
		return next(srv, ss)
	}
	if err := t.check(ss.Context()); err != nil {
		return err
	}
	return next(srv, ss)
}
