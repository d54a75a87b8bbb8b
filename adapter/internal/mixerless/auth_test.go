package mixerless_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
)

const envoySPIFFE = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"

// TestStreamsGetTheServersAuth: access-log streams pass the same mutual
// TLS, SPIFFE allow-list and token checks as Mixer's calls.
func TestStreamsGetTheServersAuth(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, DNSNames: []string{"localhost"}})
	envoy := ca.Issue(t, "envoy", tlstest.LeafOptions{Client: true, URIs: []string{envoySPIFFE}})
	intruder := ca.Issue(t, "intruder", tlstest.LeafOptions{Client: true, URIs: []string{"spiffe://cluster.local/ns/default/sa/intruder"}})
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "als-s3cr3t"
	require.NoError(t, os.WriteFile(tokenFile, []byte(token), 0o600))

	a, err := adapter.New(adapter.Options{
		GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "r", Log: quietLogger(),
		TLS:              grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile, ClientCA: ca.File},
		AllowedSPIFFEIDs: []string{envoySPIFFE}, AuthTokenFile: tokenFile,
		ConfigDir: configDir(t, handlers("")),
		Sinks: func(env sinks.Env, reg *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
			expo := exposition.New(env)
			return map[string]sinks.Sink{exposition.Key: expo}, []sinks.Factory{exposition.NewFactory(expo)}, nil
		},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})

	stream := func(leaf *tlstest.Leaf, md ...string) error {
		cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
		conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		require.NoError(t, err)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
		for _, method := range []string{envoyals.MethodV3, envoyals.MethodV2} {
			st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, method)
			if err != nil {
				return err
			}
			if err := st.SendMsg(httpMessage(true, httpEntry("reviews.default.svc.cluster.local", "/", 200, corev3.RequestMethod_GET, nil))); err != nil {
				// io.EOF: the server ended the stream; its status comes with RecvMsg.
				return st.RecvMsg(&alsv3.StreamAccessLogsResponse{})
			}
			if err := st.CloseSend(); err != nil {
				return err
			}
			if err := st.RecvMsg(&alsv3.StreamAccessLogsResponse{}); err != nil {
				return err
			}
		}
		return nil
	}
	require.NoError(t, stream(envoy, "authorization", "Bearer "+token))
	err = stream(envoy)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "no token: %v", err)
	err = stream(envoy, "authorization", "wrong")
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.NotContains(t, err.Error(), token)
	require.Error(t, stream(intruder, "authorization", token), "a SPIFFE ID outside the allow-list")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, a.Flush(ctx))
	text := scrape(t, a)
	require.Contains(t, text, `meshmetrics_accesslog_entries_received_total{api="v3",protocol="http"} 1`, "only the authorised stream's entries")
	require.Contains(t, text, `meshmetrics_accesslog_entries_received_total{api="v2",protocol="http"} 1`)
	require.Contains(t, text, `meshmetrics_auth_refused_total{reason="wrong_token"} 1`)
	// The server counts a refused handshake when its side of it ends,
	// which can be after the client has given up.
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, a), `meshmetrics_auth_refused_total{reason="spiffe_id"} 1`)
	}, 5*time.Second, 10*time.Millisecond)
}

// TestShutdownEndsStreams: Envoy keeps its stream open for as long as it
// runs; shutdown ends it once the message in hand is processed, without
// waiting for the shutdown timeout, and new streams are refused.
func TestShutdownEndsStreams(t *testing.T) {
	a := startAdapter(t, configDir(t, handlers("")), adapter.ALSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, _ := alsStream(t, ctx, a.GRPCAddr(), envoyals.MethodV3)
	require.NoError(t, st.SendMsg(httpMessage(true, httpEntry("reviews.default.svc.cluster.local", "/v1/damage?analytic=1", 200, corev3.RequestMethod_GET, nil))))
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, a), `meshmetrics_accesslog_entries_received_total{api="v3",protocol="http"} 1`)
	}, 5*time.Second, 10*time.Millisecond)
	start := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer scancel()
	require.NoError(t, a.Shutdown(sctx))
	require.Less(t, time.Since(start), 5*time.Second, "shutdown did not wait for the open stream")
	err := st.RecvMsg(&alsv3.StreamAccessLogsResponse{})
	require.Error(t, err, "the stream was ended by the server")
}
