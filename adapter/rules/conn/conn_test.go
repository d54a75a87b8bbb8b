package conn

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// echo is an adapter stand-in: it records the request bytes and metadata of each call.
type echo struct {
	got chan call
}

type call struct {
	body []byte
	md   metadata.MD
}

func serve(t *testing.T, creds credentials.TransportCredentials) (string, *echo) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e := &echo{got: make(chan call, 10)}
	opts := []grpc.ServerOption{grpc.ForceServerCodecV2(Codec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var r Raw
		if err := stream.RecvMsg(&r); err != nil {
			return err
		}
		md, _ := metadata.FromIncomingContext(stream.Context())
		e.got <- call{body: r, md: md}
		return stream.SendMsg(&Raw{})
	})}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), e
}

func invoke(t *testing.T, o Options) error {
	t.Helper()
	cc, err := Dial(o)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := Raw{0x1a, 0x01, '7'}
	var reply Raw
	return cc.Invoke(ctx, "/metric.HandleMetricService/HandleMetric", &req, &reply)
}

func TestPlaintextSendsTheBytesAsGiven(t *testing.T) {
	addr, e := serve(t, nil)
	require.NoError(t, invoke(t, Options{Address: addr}))
	got := <-e.got
	require.Equal(t, []byte{0x1a, 0x01, '7'}, got.body)
	require.Equal(t, []string{"application/grpc+proto"}, got.md.Get("content-type"))
}

type certs struct {
	ca            *tlstest.CA
	adapter       *tlstest.Leaf // carries Mixer's SPIFFE ID
	adapterNoSAN  *tlstest.Leaf
	mixer         *tlstest.Leaf
	noSystemRoots string
}

func newCerts(t *testing.T) certs {
	ca := tlstest.NewCA(t, "mesh")
	return certs{
		ca: ca,
		adapter: ca.Issue(t, "adapter", tlstest.LeafOptions{CommonName: "_server", Server: true,
			DNSNames: []string{"meshmetrics.istio-system.svc"}, URIs: []string{tlstest.MixerSPIFFE}}),
		adapterNoSAN:  ca.Issue(t, "adapter-nosan", tlstest.LeafOptions{CommonName: "_server", Server: true, DNSNames: []string{"localhost"}}),
		mixer:         ca.Issue(t, "mixer", tlstest.LeafOptions{CommonName: "_client", Client: true, URIs: []string{tlstest.MixerSPIFFE}}),
		noSystemRoots: filepath.Join(t.TempDir(), "none.crt"),
	}
}

func serverTLS(leaf *tlstest.Leaf, clientCA *tlstest.CA) credentials.TransportCredentials {
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}
	if clientCA != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientCA.Pool()
	}
	return credentials.NewTLS(cfg)
}

func TestMutualTLSAsMixer(t *testing.T) {
	c := newCerts(t)
	other := tlstest.NewCA(t, "other")
	stranger := other.Issue(t, "stranger", tlstest.LeafOptions{Server: true, URIs: []string{tlstest.MixerSPIFFE}})
	mutual := &crd.Mutual{ClientCertificate: c.mixer.CertFile, PrivateKey: c.mixer.KeyFile, CACertificates: c.ca.File,
		ServerName: "anything: server_name is SNI only"}

	tests := []struct {
		name   string
		server *tlstest.Leaf
		bypass bool
		err    string
	}{
		{"adapter with Mixer's SAN", c.adapter, false, ""},
		{"adapter without the SAN", c.adapterNoSAN, false, "cert SAN [] is not whitelisted"},
		{"SAN check bypassed", c.adapterNoSAN, true, ""},
		{"adapter from an unknown CA", stranger, false, "certificate signed by unknown authority"},
		{"unknown CA even when bypassed", stranger, true, "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := serve(t, serverTLS(tt.server, c.ca))
			err := invoke(t, Options{Address: addr, Auth: &crd.Authentication{Mutual: mutual}, BypassSANVerification: tt.bypass, SystemRoots: c.noSystemRoots})
			if tt.err == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tt.err)
			}
		})
	}

	_, err := Dial(Options{Address: "x", Auth: &crd.Authentication{Mutual: &crd.Mutual{CACertificates: c.ca.File}}})
	require.ErrorContains(t, err, "load peer cert/key error", "Mixer has no default client certificate")
}

func TestTLSWithTokenHeaders(t *testing.T) {
	c := newCerts(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("s3cret  x\r\n"), 0o600))

	tests := []struct {
		name   string
		tls    crd.TLS
		header string
		want   string
	}{
		{"PLAIN", crd.TLS{AuthHeader: "PLAIN"}, "authorization", "s3cret  x"},
		{"BEARER", crd.TLS{AuthHeader: "BEARER"}, "authorization", "Bearer s3cret  x"},
		{"custom header", crd.TLS{CustomHeader: "x-api-key"}, "x-api-key", "s3cret  x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, e := serve(t, serverTLS(c.adapterNoSAN, nil))
			cfg := tt.tls
			cfg.TokenPath, cfg.CACertificates, cfg.ServerName = tokenFile, c.ca.File, "localhost"
			require.NoError(t, invoke(t, Options{Address: addr, Auth: &crd.Authentication{TLS: &cfg}, SystemRoots: c.noSystemRoots}))
			got := <-e.got
			require.Equal(t, []string{tt.want}, got.md.Get(tt.header), "the token is sent as read, but for the line ending grpc-go cannot send")
		})
	}

	t.Run("host name is verified", func(t *testing.T) {
		addr, _ := serve(t, serverTLS(c.adapterNoSAN, nil))
		err := invoke(t, Options{Address: addr, SystemRoots: c.noSystemRoots,
			Auth: &crd.Authentication{TLS: &crd.TLS{TokenPath: tokenFile, AuthHeader: "PLAIN", CACertificates: c.ca.File, ServerName: "elsewhere"}}})
		require.ErrorContains(t, err, "certificate is valid for localhost, not elsewhere")
	})

	t.Run("token file read once, at dial", func(t *testing.T) {
		addr, e := serve(t, serverTLS(c.adapterNoSAN, nil))
		tok := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(tok, []byte("first"), 0o600))
		cc, err := Dial(Options{Address: addr, SystemRoots: c.noSystemRoots,
			Auth: &crd.Authentication{TLS: &crd.TLS{TokenPath: tok, AuthHeader: "PLAIN", CACertificates: c.ca.File, ServerName: "localhost"}}})
		require.NoError(t, err)
		defer cc.Close()
		require.NoError(t, os.WriteFile(tok, []byte("second"), 0o600))
		req, reply := Raw{}, Raw{}
		require.NoError(t, cc.Invoke(context.Background(), "/x/y", &req, &reply))
		require.Equal(t, []string{"first"}, (<-e.got).md.Get("authorization"))
	})
}

func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("t"), 0o600))
	tests := []struct {
		name string
		tls  crd.TLS
		want string
	}{
		{"no token type", crd.TLS{TokenPath: tokenFile}, "token type should be specified"},
		{"no token path", crd.TLS{AuthHeader: "PLAIN"}, "token path should not be empty"},
		{"missing token file", crd.TLS{TokenPath: filepath.Join(dir, "none"), AuthHeader: "PLAIN"}, "no such file"},
		{"oauth", crd.TLS{OAuth: &crd.OAuth{}, AuthHeader: "PLAIN"}, "oauth token sources are not supported"},
		{"missing CA", crd.TLS{TokenPath: tokenFile, AuthHeader: "PLAIN", CACertificates: filepath.Join(dir, "ca.pem")}, "CA certificate cannot be loaded"},
		{"CA without PEM", crd.TLS{TokenPath: tokenFile, AuthHeader: "PLAIN", CACertificates: tokenFile}, "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Dial(Options{Address: "127.0.0.1:1", Auth: &crd.Authentication{TLS: &tt.tls}})
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestBypassFromEnv(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "TRUE": true, "": false, "false": false, "yes": false} {
		require.Equal(t, want, BypassFromEnv(func(string) string { return v }), v)
	}
}

func TestCodec(t *testing.T) {
	_, err := Codec{}.Marshal("not raw")
	require.ErrorContains(t, err, "want *conn.Raw or *conn.Parts")
	require.Error(t, Codec{}.Unmarshal(nil, new(int)))

	addr, e := serve(t, nil)
	cc, err := Dial(Options{Address: addr})
	require.NoError(t, err)
	defer cc.Close()
	req := Parts{{0x0a, 0x00}, {0x1a, 0x01, '9'}}
	require.NoError(t, cc.Invoke(context.Background(), "/x/y", &req, &Discard{}))
	require.Equal(t, []byte{0x0a, 0x00, 0x1a, 0x01, '9'}, (<-e.got).body, "the parts arrive as one message")
}
