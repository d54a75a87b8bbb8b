// Package conn connects to an out-of-process adapter the way Mixer's dynamic handler does:
// the handler's authentication (mutual TLS with Mixer's SAN check, or TLS with a token
// header), the round_robin balancer, and a codec that sends pre-encoded bytes.
package conn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/meshmetrics/meshmetrics/adapter/internal/certpool"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// SystemRoots is the bundle Mixer adds to every CA file (dynamic/auth.go, publicCACertsFile).
const SystemRoots = "/etc/ssl/certs/ca-certificates.crt"

// EnvBypassSAN is the variable that makes Mixer skip the SAN check of mutual TLS.
const EnvBypassSAN = "BYPASS_OOP_MTLS_SAN_VERIFICATION"

// Options say how to reach an adapter.
type Options struct {
	// Address is the gRPC dial target (the handler's connection.address, or an override).
	Address string
	// Auth is the handler's connection.authentication; nil means plaintext.
	Auth *crd.Authentication
	// BypassSANVerification skips the URI SAN check of mutual TLS, as
	// BYPASS_OOP_MTLS_SAN_VERIFICATION=true does in Mixer.
	BypassSANVerification bool
	// SystemRoots replaces SystemRoots (tests; hosts that keep their bundle elsewhere).
	// A missing bundle is ignored, as Mixer only warns.
	SystemRoots string
	// DialOptions are added last.
	DialOptions []grpc.DialOption
}

// Dial makes a client connection. Like grpc.Dial in Mixer it does not wait for the
// adapter: connection errors show on the first call. Files named by the authentication
// (certificates, keys, the token) are read here, once, as Mixer reads them when it builds
// the handler.
func Dial(o Options) (*grpc.ClientConn, error) {
	opts, err := authOptions(o)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{})))
	opts = append(opts, o.DialOptions...)
	return grpc.NewClient(o.Address, opts...)
}

// BypassFromEnv reads EnvBypassSAN the way Mixer's env.RegisterBoolVar does: "true", "1"
// and the other strconv.ParseBool spellings of true enable it.
func BypassFromEnv(getenv func(string) string) bool {
	switch getenv(EnvBypassSAN) {
	case "1", "t", "T", "TRUE", "true", "True":
		return true
	}
	return false
}

func authOptions(o Options) ([]grpc.DialOption, error) {
	a := o.Auth
	switch {
	case a == nil || (a.TLS == nil && a.Mutual == nil):
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	case a.Mutual != nil:
		cfg, err := MutualTLS(a.Mutual, o.rootsFile(), o.BypassSANVerification)
		if err != nil {
			return nil, err
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, nil
	}
	t := a.TLS
	roots, err := loadRoots(o.rootsFile(), t.CACertificates)
	if err != nil {
		return nil, fmt.Errorf("failed to build TLS dial option: CA certificate cannot be loaded: %w", err)
	}
	token, err := TokenCredentials(t)
	if err != nil {
		return nil, fmt.Errorf("failed to build TLS dial option: cannot get gRPC per-RPC credentials: %w", err)
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithPerRPCCredentials(token)}, nil
}

func (o Options) rootsFile() string {
	if o.SystemRoots != "" {
		return o.SystemRoots
	}
	return SystemRoots
}

// loadRoots is the system bundle plus the handler's CA file.
func loadRoots(system, caFile string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(system); err == nil {
		pool.AppendCertsFromPEM(pem)
	}
	if caFile != "" {
		if err := certpool.AppendFile(pool, caFile); err != nil {
			return nil, err
		}
	}
	return pool, nil
}

// MutualTLS is Mixer's client side of `mutual` authentication (dynamic/auth.go,
// buildMTLSDialOption): its own key pair (required: Mixer has no default despite the proto
// comment), roots from the system bundle and ca_certificates, server_name as SNI only, and
// in place of hostname verification, VerifyMixerPeer.
func MutualTLS(m *crd.Mutual, systemRoots string, bypassSAN bool) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(m.ClientCertificate, m.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("load peer cert/key error: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load peer cert/key error: %w", err)
	}
	roots, err := loadRoots(systemRoots, m.CACertificates)
	if err != nil {
		return nil, fmt.Errorf("failed to build TLS dial option: CA certificate cannot be loaded: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		// Mixer turns stock verification off and does its own: the same chain check, with
		// the SAN match in place of the host name.
		InsecureSkipVerify:    true, //nolint:gosec // VerifyPeerCertificate verifies
		VerifyPeerCertificate: VerifyMixerPeer(roots, leaf, bypassSAN),
		ServerName:            m.ServerName,
		MinVersion:            tls.VersionTLS12,
	}, nil
}

// VerifyMixerPeer is Mixer's check of an adapter's certificate under mutual TLS: the chain
// must verify against roots (default key usage: server authentication), and unless bypassed,
// the leaf must carry a URI SAN equal to one of the URI SANs of Mixer's own certificate
// (e.g. spiffe://cluster.local/ns/istio-system/sa/istio-mixer-service-account). There is no
// host name check.
func VerifyMixerPeer(roots *x509.CertPool, own *x509.Certificate, bypassSAN bool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the adapter sent no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return errors.New("failed to parse certificate from server: " + err.Error())
			}
			certs[i] = c
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := certs[0].Verify(opts); err != nil {
			return err
		}
		if bypassSAN {
			return nil
		}
		for _, got := range certs[0].URIs {
			for _, want := range own.URIs {
				if got.String() == want.String() {
					return nil
				}
			}
		}
		return fmt.Errorf("failed to authenticate, cert SAN %v is not whitelisted (Mixer's own certificate has %v; set %s=true to skip this check)",
			certs[0].URIs, own.URIs, EnvBypassSAN)
	}
}

// TokenCredentials is the per-RPC token of `tls` authentication (dynamic/auth.go,
// buildPerRPCCredentials): token_path is read once, when the handler is built, and sent in
// `authorization` (auth_header PLAIN), `authorization: Bearer ...` (BEARER) or the
// custom_header. One of auth_header and custom_header must be set.
//
// Mixer sends the file's bytes verbatim, a trailing newline included; grpc-go 1.85 refuses
// to send a header with a newline, so line endings at the end are dropped here. Everything
// else is sent as read.
func TokenCredentials(t *crd.TLS) (credentials.PerRPCCredentials, error) {
	if t.OAuth != nil {
		return nil, errors.New("oauth token sources are not supported by mockmixer; use token_path")
	}
	if t.TokenPath == "" {
		return nil, errors.New("token path should not be empty")
	}
	token, err := os.ReadFile(t.TokenPath)
	if err != nil {
		return nil, err
	}
	h := &headerToken{token: strings.TrimRight(string(token), "\r\n")}
	switch {
	case t.CustomHeader != "":
		h.header = t.CustomHeader
	case t.AuthHeader == "PLAIN":
		h.header = "authorization"
	case t.AuthHeader == "BEARER":
		h.header, h.prefix = "authorization", "Bearer "
	default:
		return nil, errors.New("token type should be specified (set auth_header: PLAIN or BEARER, or custom_header)")
	}
	return h, nil
}

type headerToken struct {
	header, prefix, token string
}

func (h *headerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{h.header: h.prefix + h.token}, nil
}

func (h *headerToken) RequireTransportSecurity() bool { return true }

// Codec sends requests that are already encoded, as Mixer's bytes-out-proto-in-codec does,
// and decodes replies with their generated Unmarshal. Its name is "proto", so the content
// type stays application/grpc+proto.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return "proto" }

// Marshal implements encoding.CodecV2; v must be a *Raw or a *Parts. Neither is copied.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch r := v.(type) {
	case *Raw:
		return mem.BufferSlice{mem.SliceBuffer(*r)}, nil
	case *Parts:
		out := make(mem.BufferSlice, len(*r))
		for i, p := range *r {
			out[i] = mem.SliceBuffer(p)
		}
		return out, nil
	}
	return nil, fmt.Errorf("conn codec: want *conn.Raw or *conn.Parts, got %T", v)
}

// Unmarshal implements encoding.CodecV2 for generated messages and *Raw.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *Raw:
		*m = data.Materialize()
		return nil
	case *Discard:
		return nil
	case interface{ Unmarshal([]byte) error }:
		return m.Unmarshal(data.Materialize())
	}
	return fmt.Errorf("conn codec: cannot decode into %T", v)
}

// Raw is an encoded message.
type Raw []byte

// Parts is an encoded message in pieces, sent one after the other: a pre-encoded request
// body and the dedup_id field appended to it, without copying the body.
type Parts [][]byte

// Discard takes a reply and throws it away, as Mixer does with ReportResult.
type Discard struct{}
