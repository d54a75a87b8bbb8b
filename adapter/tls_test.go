package adapter_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
)

// mixerTLS is the client side of Mixer's `mutual` authentication: its own
// certificate, and its own check of the adapter's (chain + shared SPIFFE
// URI SAN, no hostname check).
func mixerTLS(ca *tlstest.CA, client *tlstest.Leaf) *tls.Config {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // verified below, as Mixer does
	if client != nil {
		cfg.Certificates = []tls.Certificate{client.TLS}
		leaf := client.TLS.Leaf
		cfg.VerifyPeerCertificate = tlstest.MixerVerify(ca.Pool(), leaf)
	}
	return cfg
}

func call(t *testing.T, addr string, creds grpc.DialOption) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, creds, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = metricpb.NewHandleMetricServiceClient(conn).HandleMetric(ctx, &metricpb.HandleMetricRequest{
		AdapterConfig: cfg(t, counterParams),
		Instances:     []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Int(1))},
	})
	return err
}

func TestMutualTLSAsMixerDoesIt(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{CommonName: "_server", Server: true,
		DNSNames: []string{"meshmetrics.istio-system.svc"}, URIs: []string{tlstest.MixerSPIFFE}})
	mixerLeaf := ca.Issue(t, "mixer", tlstest.LeafOptions{CommonName: "_client", Client: true, URIs: []string{tlstest.MixerSPIFFE}})
	other := tlstest.NewCA(t, "other")
	stranger := other.Issue(t, "stranger", tlstest.LeafOptions{CommonName: "stranger", Client: true, URIs: []string{tlstest.MixerSPIFFE}})

	// The walkthrough's environment variables configure it.
	env := map[string]string{grpcserver.EnvCredential: serverLeaf.CertFile, grpcserver.EnvPrivateKey: serverLeaf.KeyFile, grpcserver.EnvCertificate: ca.File}
	h := start(t, func(o *adapter.Options) { o.TLS = grpcserver.TLSFilesFromEnv(func(k string) string { return env[k] }) })
	addr := h.a.GRPCAddr()

	tests := []struct {
		name  string
		creds grpc.DialOption
		ok    bool
	}{
		{"Mixer's client certificate", grpc.WithTransportCredentials(credentials.NewTLS(mixerTLS(ca, mixerLeaf))), true},
		{"no client certificate", grpc.WithTransportCredentials(credentials.NewTLS(mixerTLS(ca, nil))), false},
		{"certificate from another CA", grpc.WithTransportCredentials(credentials.NewTLS(mixerTLS(other, stranger))), false},
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := call(t, addr, tc.creds)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

func TestMixerRefusesAnAdapterCertificateWithoutItsSAN(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{CommonName: "_server", Server: true})
	mixerLeaf := ca.Issue(t, "mixer", tlstest.LeafOptions{CommonName: "_client", Client: true, URIs: []string{tlstest.MixerSPIFFE}})
	h := start(t, func(o *adapter.Options) {
		o.TLS = grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile, ClientCA: ca.File}
	})
	err := call(t, h.a.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(mixerTLS(ca, mixerLeaf))))
	require.ErrorContains(t, err, "no URI SAN matching", "docs/deploy.md tells operators to put Mixer's SPIFFE ID in the adapter certificate")
}

func TestServerTLSWithoutClientCertificates(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, DNSNames: []string{"localhost"}})
	h := start(t, func(o *adapter.Options) {
		o.TLS = grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile}
	})
	require.NoError(t, call(t, h.a.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}))))
}

func TestCertificatesAreReloadedWithoutRestart(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	first := ca.Issue(t, "adapter", tlstest.LeafOptions{CommonName: "first", Server: true, DNSNames: []string{"localhost"}})
	h := start(t, func(o *adapter.Options) { o.TLS = grpcserver.TLSFiles{Cert: first.CertFile, Key: first.KeyFile} })

	seen := func() string {
		conn, err := tls.Dial("tcp", h.a.GRPCAddr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	require.Equal(t, "first", seen())

	// Rotate in place, as a Secret update does.
	second := ca.Issue(t, "adapter2", tlstest.LeafOptions{CommonName: "second", Server: true, DNSNames: []string{"localhost"}})
	for _, f := range [][2]string{{second.CertFile, first.CertFile}, {second.KeyFile, first.KeyFile}} {
		b, err := os.ReadFile(f[0])
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(f[1]+".new", b, 0o600))
		require.NoError(t, os.Rename(f[1]+".new", f[1]))
	}
	require.Eventually(t, func() bool { return seen() == "second" }, 5*time.Second, 100*time.Millisecond)
}

// TestTLSHandshakeRefusalsAreCountedAndLogged: clients refused during the
// handshake are counted by reason and logged with their address (a TCP probe
// that connects and closes only at debug level).
func TestTLSHandshakeRefusalsAreCountedAndLogged(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	otherCA := tlstest.NewCA(t, "elsewhere")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, DNSNames: []string{"localhost"}})
	stranger := otherCA.Issue(t, "stranger", tlstest.LeafOptions{Client: true, URIs: []string{tlstest.MixerSPIFFE}})
	intruder := ca.Issue(t, "intruder", tlstest.LeafOptions{Client: true, URIs: []string{"spiffe://cluster.local/ns/default/sa/intruder"}})
	h := start(t, func(o *adapter.Options) {
		o.TLS = grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile, ClientCA: ca.File}
		o.AllowedSPIFFEIDs = []string{tlstest.MixerSPIFFE}
		o.LogEvery = time.Nanosecond // every refusal logged, for the test
	})
	handshake := func(certs ...tls.Certificate) string {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
		if len(certs) > 0 {
			// Sent whatever CAs the server names (crypto/tls would otherwise
			// leave out a certificate of a CA the server does not accept).
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		c, err := tls.Dial("tcp", h.a.GRPCAddr(), cfg)
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(make([]byte, 1))
			defer c.Close()
			return c.LocalAddr().String()
		}
		return ""
	}
	tests := []struct {
		name   string
		do     func() string
		reason string
		logged bool
	}{
		{"no client certificate", func() string { return handshake() }, "no_client_certificate", true},
		{"certificate of another CA", func() string { return handshake(stranger.TLS) }, "unknown_authority", true},
		{"SPIFFE ID not allowed", func() string { return handshake(intruder.TLS) }, "spiffe_id", true},
		{"plain text on the TLS port", func() string {
			c, err := net.Dial("tcp", h.a.GRPCAddr())
			require.NoError(t, err)
			defer c.Close()
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			_, _ = c.Read(make([]byte, 64))
			return c.LocalAddr().String()
		}, "not_tls", true},
		{"a TCP probe", func() string {
			c, err := net.Dial("tcp", h.a.GRPCAddr())
			require.NoError(t, err)
			c.Close()
			return ""
		}, "connection_closed", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(h.a.Metrics().AuthRefused.WithLabelValues(tc.reason))
			peer := tc.do()
			require.Eventually(t, func() bool {
				return testutil.ToFloat64(h.a.Metrics().AuthRefused.WithLabelValues(tc.reason)) == before+1
			}, 5*time.Second, 10*time.Millisecond, "log so far:\n%s", h.logText())
			if tc.logged {
				require.Eventually(t, func() bool {
					return strings.Contains(h.logText(), "TLS handshake refused") && (peer == "" || strings.Contains(h.logText(), peer))
				}, 5*time.Second, 10*time.Millisecond, "the refusal is logged with the peer's address %s", peer)
			}
		})
	}
}
