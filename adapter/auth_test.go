package adapter_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
)

func TestSPIFFEAllowList(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, URIs: []string{tlstest.MixerSPIFFE}})
	mixer := ca.Issue(t, "mixer", tlstest.LeafOptions{Client: true, URIs: []string{tlstest.MixerSPIFFE}})
	other := ca.Issue(t, "other", tlstest.LeafOptions{Client: true, URIs: []string{"spiffe://cluster.local/ns/default/sa/intruder", tlstest.MixerSPIFFE + "x"}})
	bare := ca.Issue(t, "bare", tlstest.LeafOptions{Client: true})
	h := start(t, func(o *adapter.Options) {
		o.TLS = grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile, ClientCA: ca.File}
		o.AllowedSPIFFEIDs = []string{tlstest.MixerSPIFFE}
	})
	tests := []struct {
		name   string
		client *tlstest.Leaf
		ok     bool
	}{
		{"Mixer's identity", mixer, true},
		{"another workload of the same CA", other, false},
		{"no SPIFFE ID", bare, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{Certificates: []tls.Certificate{tc.client.TLS}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12,
				InsecureSkipVerify: true, VerifyPeerCertificate: tlstest.MixerVerify(ca.Pool(), mixer.TLS.Leaf)} //nolint:gosec // Mixer's own check
			err := call(t, h.a.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
	// The server counts a refused handshake when its side of it ends, which
	// can be just after the client has seen the refusal.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(h.a.Metrics().AuthRefused.WithLabelValues("spiffe_id")) == 2
	}, 5*time.Second, 5*time.Millisecond)
}

func TestSPIFFEAllowListNeedsMutualTLS(t *testing.T) {
	_, err := adapter.New(adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "r",
		AllowedSPIFFEIDs: []string{tlstest.MixerSPIFFE},
		Sinks: func(sinks.Env, *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
			return nil, []sinks.Factory{sinktest.NewFactory()}, nil
		}})
	require.ErrorContains(t, err, "needs mutual TLS")
}

func TestTokenCheck(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, DNSNames: []string{"localhost"}})
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "s3cr3t-token-value"
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)) // Mixer sends the newline too
	for _, header := range []string{"authorization", "x-api-key"} {
		t.Run(header, func(t *testing.T) {
			h := start(t, func(o *adapter.Options) {
				o.TLS = grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile}
				o.AuthTokenFile, o.AuthHeader = tokenFile, header
			})
			conn, err := grpc.NewClient(h.a.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(
				&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})),
				grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
			require.NoError(t, err)
			defer conn.Close()
			client := metricpb.NewHandleMetricServiceClient(conn)
			send := func(md ...string) error {
				ctx := metadata.AppendToOutgoingContext(context.Background(), md...)
				_, err := client.HandleMetric(ctx, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams),
					Instances: []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Int(1))}})
				return err
			}
			// The file ends in a newline that Mixer would send verbatim; a
			// current grpc-go client refuses a newline in a header, so
			// surrounding whitespace stands in for it.
			require.NoError(t, send(header, " "+token+" "), "PLAIN, as in the file")
			require.NoError(t, send(header, "Bearer "+token), "BEARER")
			for _, bad := range [][]string{{}, {header, "wrong"}, {header, token + "x"}, {"other-header", token}} {
				err := send(bad...)
				require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", bad)
				require.NotContains(t, err.Error(), token)
			}
			// Health probes carry no token and must still work.
			r, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
			require.NoError(t, err)
			require.Equal(t, healthpb.HealthCheckResponse_SERVING, r.Status)
			require.NotContains(t, h.log.String(), token)
		})
	}

	// Rotation: a new token is picked up without a restart.
	secrets := &logging.Secrets{}
	h := start(t, func(o *adapter.Options) {
		o.TLS = grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile}
		o.AuthTokenFile = tokenFile
		o.Secrets = secrets
	})
	conn, err := grpc.NewClient(h.a.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, os.WriteFile(tokenFile+".new", []byte("rotated-token-2"), 0o600))
	require.NoError(t, os.Rename(tokenFile+".new", tokenFile))
	require.Eventually(t, func() bool {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "rotated-token-2")
		_, err := metricpb.NewHandleMetricServiceClient(conn).HandleMetric(ctx, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams)})
		return err == nil
	}, 5*time.Second, 100*time.Millisecond)
	require.Equal(t, "x "+logging.Redacted, secrets.RedactString("x rotated-token-2"), "a rotated token is redacted like the first")
}
