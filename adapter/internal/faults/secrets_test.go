package faults_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// The secrets of TestSecretsNeverShow, each from a different source.
const (
	libParamToken   = "lib-param-tok-7c1e9a"   // librato.token, in the handler params
	libFileToken    = "lib-file-tok-5b2d11"    // librato.token_path
	libEnvToken     = "lib-env-tok-93af02"     // librato.token_env
	rwPassword      = "rw-basic-pw-4f00e1"     // remote_write.basic_auth.password
	rwURLPassword   = "rw-url-pw-88aa31"       // the remote-write URL's user info
	rwBearer        = "rw-bearer-tok-d00d77"   // remote_write.bearer_token_file
	rwHeaderKey     = "rw-hdr-key-77b0c3"      // a remote_write header that looks like a credential
	otlpFileToken   = "otlp-file-tok-a1b2c3"   // otlp.header_files (authorization: Bearer ...)
	otlpHeaderKey   = "otlp-hdr-key-d4e5f6"    // an otlp header that looks like a credential
	inboundToken    = "inbound-tok-1234abcd"   // --auth-token-file
	inboundRotated  = "inbound-tok-rotated-99" // the same file after a rotation
	libQueryKey     = "lib-query-key-61d0ab"   // ?api_key= in a Librato URL (a proxy's)
	rwQueryToken    = "rw-query-tok-2e77c9"    // ?access_token= in a remote-write URL
	otlpQueryToken  = "otlp-query-tok-4c1d5e"  // ?access_token= in an OTLP endpoint URL
	libTokenEnvName = "MESHMETRICS_FAULTS_TEST_LIBRATO_TOKEN"
)

var allSecrets = []string{libParamToken, libFileToken, libEnvToken, rwPassword, rwURLPassword, rwBearer, rwHeaderKey,
	otlpFileToken, otlpHeaderKey, inboundToken, inboundRotated, libQueryKey, rwQueryToken, otlpQueryToken}

// TestSecretsNeverShow drives every path that handles a credential, the
// failing ones included (a backend refusing it, a config refused with one
// in it, a caller with a wrong token, a rotated token, a spooled request),
// at debug level in both log formats, and looks for every secret in the
// logs, the gRPC errors, /metrics, /debug/config, the sink keys and the
// spool directory.
func TestSecretsNeverShow(t *testing.T) {
	t.Setenv(libTokenEnvName, libEnvToken)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, content string) string {
				p := filepath.Join(dir, name)
				require.NoError(t, os.WriteFile(p, []byte(content+"\n"), 0o600))
				return p
			}
			inboundFile := write("inbound", inboundToken)
			libFile := write("librato", libFileToken)
			bearerFile := write("bearer", rwBearer)
			otlpFile := write("otlp", otlpFileToken)
			spoolDir := filepath.Join(dir, "spool")

			fake := func(token string) *libratotest.Server {
				s := libratotest.New(libratotest.WithCredentials(libratotest.DefaultEmail, token))
				t.Cleanup(s.Close)
				return s
			}
			libParam, libFileSrv, libEnv, libQuery := fake(libParamToken), fake(libFileToken), fake(libEnvToken), fake(libParamToken)
			libRefusing := fake("another-token") // answers 401 to libParamToken
			libDown := fake(libParamToken)
			libDown.GoDown(0) // its requests wait in the spool
			receiver := func(o rwtest.Option) *rwtest.Server {
				s := rwtest.New(o)
				t.Cleanup(s.Close)
				return s
			}
			rwBasic := receiver(rwtest.WithBasicAuth("bob", rwPassword))
			rwURL := receiver(rwtest.WithBasicAuth("bob", rwURLPassword))
			rwBearerSrv := receiver(rwtest.WithBearerToken(rwBearer))
			rwQuery := receiver(rwtest.WithBearerToken(rwBearer))
			rwRefusing := receiver(rwtest.WithBearerToken("another-token"))
			otlpReceiver := func(bearer string) *otlptest.Server {
				s := otlptest.New(otlptest.WithRequiredHeader("authorization", "Bearer "+bearer), otlptest.WithRequiredHeader("x-api-key", otlpHeaderKey))
				t.Cleanup(s.Close)
				return s
			}
			otlpGood, otlpRefusing, otlpQuery := otlpReceiver(otlpFileToken), otlpReceiver("another-token"), otlpReceiver(otlpFileToken)

			var logs syncBuffer
			log, secrets, err := logging.New(logging.Options{Format: format, Level: "debug", Output: &logs})
			require.NoError(t, err)
			keys := &keyLog{}
			a, err := adapter.New(adapter.Options{
				GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "secrets-0", Log: log, Secrets: secrets,
				AuthTokenFile: inboundFile, SpoolDir: spoolDir, Tick: 5 * time.Millisecond, ShutdownTimeout: time.Second, DebugConfig: true,
				Sinks: func(env sinks.Env, _ *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
					lf := librato.NewFactoryWith(env, librato.Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
					rf := remotewrite.NewFactory(env)
					return nil, []sinks.Factory{keyRecorder{lf, keys}, keyRecorder{rf, keys}, keyRecorder{otlp.NewFactory(env), keys}}, nil
				},
			})
			require.NoError(t, err)
			require.NoError(t, a.Start())
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = a.Shutdown(ctx)
			})
			conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
			require.NoError(t, err)
			defer conn.Close()

			lib := func(url string, edit func(*config.LibratoParams)) *config.Params {
				l := &config.LibratoParams{Url: url, Email: libratotest.DefaultEmail, Period: time.Hour, MaxRetryElapsed: 200 * time.Millisecond}
				edit(l)
				return &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric}, Librato: l}
			}
			rw := func(url string, edit func(*config.RemoteWrite)) *config.Params {
				r := &config.RemoteWrite{Url: url, Interval: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
					MaxRetryElapsed: 200 * time.Millisecond}
				edit(r)
				return &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric},
					Prometheus: &config.PrometheusParams{DisableExposition: true, RemoteWrite: r}}
			}
			otel := func(srv *otlptest.Server, protocol string, edit func(*config.OtlpParams)) *config.Params {
				o := &config.OtlpParams{Endpoint: srv.URL(), Protocol: protocol, Insecure: true, Interval: time.Hour,
					Temporality: config.OtlpParams_DELTA, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
					MaxRetryElapsed: 200 * time.Millisecond, Headers: map[string]string{"X-Api-Key": otlpHeaderKey},
					HeaderFiles: []*config.OtlpParams_HeaderFile{{Name: "authorization", Path: otlpFile, Prefix: "Bearer "}}}
				if protocol == otlp.ProtocolGRPC {
					o.Endpoint = srv.Addr()
				}
				edit(o)
				return &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric}, Otlp: o}
			}
			good := []*config.Params{
				otel(otlpGood, otlp.ProtocolGRPC, func(*config.OtlpParams) {}),
				otel(otlpGood, otlp.ProtocolHTTP, func(*config.OtlpParams) {}),
				lib(libParam.URL(), func(l *config.LibratoParams) { l.Token = libParamToken }),
				lib(libFileSrv.URL(), func(l *config.LibratoParams) { l.TokenPath = libFile }),
				lib(libEnv.URL(), func(l *config.LibratoParams) { l.TokenEnv = libTokenEnvName }),
				rw(rwBasic.URL(), func(r *config.RemoteWrite) {
					r.BasicAuth = &config.BasicAuth{Username: "bob", Password: rwPassword}
					r.Headers = map[string]string{"X-Api-Key": rwHeaderKey}
				}),
				rw(strings.Replace(rwURL.URL(), "http://", "http://bob:"+rwURLPassword+"@", 1), func(*config.RemoteWrite) {}),
				rw(rwBearerSrv.URL(), func(r *config.RemoteWrite) { r.BearerTokenFile = bearerFile }),
				// Credentials in query strings (a proxy's): shown redacted,
				// and the query stays a query when the API path is joined.
				lib(libQuery.URL()+"/?api_key="+libQueryKey, func(l *config.LibratoParams) { l.Token = libParamToken }),
				rw(rwQuery.URL()+"?access_token="+rwQueryToken, func(r *config.RemoteWrite) { r.BearerTokenFile = bearerFile }),
				otel(otlpQuery, otlp.ProtocolHTTP, func(o *config.OtlpParams) { o.Endpoint += "?access_token=" + otlpQueryToken }),
			}
			failing := []*config.Params{
				lib(libRefusing.URL(), func(l *config.LibratoParams) { l.Token = libParamToken }),
				rw(rwRefusing.URL(), func(r *config.RemoteWrite) { r.BearerTokenFile = bearerFile }),
				otel(otlpRefusing, otlp.ProtocolGRPC, func(*config.OtlpParams) {}),
				otel(otlpRefusing, otlp.ProtocolHTTP, func(*config.OtlpParams) {}),
			}
			// Down: net/http's errors name the URL, query included.
			spooled := lib(libDown.URL()+"?api_key="+libQueryKey, func(l *config.LibratoParams) { l.Token = libParamToken })
			refused := []*config.Params{ // invalid configs carrying secrets
				lib(libParam.URL(), func(l *config.LibratoParams) {
					l.Token = libParamToken
					l.Tags = map[string]string{"bad tag!": "x"}
				}),
				rw(rwBasic.URL(), func(r *config.RemoteWrite) {
					r.BasicAuth = &config.BasicAuth{Username: "bob", Password: rwPassword}
					r.ExternalLabels = map[string]string{"bad-label": "x"}
				}),
				otel(otlpGood, otlp.ProtocolHTTP, func(o *config.OtlpParams) {
					o.ResourceAttributes = map[string]string{otlp.ServiceInstanceID: "x"}
				}),
			}

			var grpcErrors []string
			call := func(token string, p *config.Params) error {
				ctx := context.Background()
				if token != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
				}
				_, err := metricpb.NewHandleMetricServiceClient(conn).HandleMetric(ctx, &metricpb.HandleMetricRequest{
					AdapterConfig: anyOf(t, p), Instances: instances(3, 3, 0)})
				if err != nil {
					grpcErrors = append(grpcErrors, status.Convert(err).Message())
				}
				return err
			}
			for _, p := range append(good, failing...) {
				require.NoError(t, call(inboundToken, p))
			}
			for _, p := range refused {
				require.Equal(t, codes.InvalidArgument, status.Code(call(inboundToken, p)))
			}
			require.Equal(t, codes.Unauthenticated, status.Code(call("", good[0])))
			require.Equal(t, codes.Unauthenticated, status.Code(call("wrong-token-0000", good[0])))
			// A rotated token: the old one is refused, the new one works.
			time.Sleep(10 * time.Millisecond) // a modification time the file system can tell apart
			write("inbound", inboundRotated)
			require.Eventually(t, func() bool { return call(inboundRotated, good[0]) == nil }, 10*time.Second, 50*time.Millisecond)
			require.Equal(t, codes.Unauthenticated, status.Code(call(inboundToken, good[0])))

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			require.NoError(t, a.Flush(ctx))
			cancel()
			// Then a request that waits in the spool for a backend that is down.
			require.NoError(t, call(inboundRotated, spooled))
			ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
			require.Error(t, a.Flush(ctx))
			cancel()

			// The paths ran: sends succeeded and failed, configs and callers
			// were refused.
			require.Equal(t, []float64{3, 3, 3}, []float64{libParam.Total(libratoName), libFileSrv.Total(libratoName), libEnv.Total(libratoName)},
				"3 instances a call")
			require.Equal(t, 9.0, otlpGood.Total(otlpName), "3 instances a call; the gRPC config got one more call, with the rotated token")
			require.Positive(t, otlpRefusing.Stats().ByStatus[http.StatusUnauthorized], "refused over gRPC and HTTP")
			require.Equal(t, []float64{3, 3, 3, 3}, []float64{rwBasic.Total(rwName), rwURL.Total(rwName), rwBearerSrv.Total(rwName), rwQuery.Total(rwName)})
			require.Equal(t, 3.0, libQuery.Total(libratoName), "posted to /v1/measurements, the query kept apart")
			require.Equal(t, 3.0, otlpQuery.Total(otlpName), "an OTLP endpoint with a query string")
			last, ok := libQuery.LastRequest()
			require.True(t, ok)
			require.Equal(t, librato.MeasurementsPath, last.Path)
			require.Equal(t, "api_key="+libQueryKey, last.Query, "the URL's query string reached the server as one")
			require.Positive(t, libRefusing.StatusCount(http.StatusUnauthorized))
			require.Positive(t, rwRefusing.Stats().ByStatus[http.StatusUnauthorized])
			require.GreaterOrEqual(t, len(grpcErrors), 6, "3 configs and 3 callers refused")

			texts := map[string]string{
				"gRPC errors":   strings.Join(grpcErrors, "\n"),
				"/metrics":      get(t, "http://"+a.HTTPAddr()+"/metrics"),
				"/debug/config": get(t, "http://"+a.HTTPAddr()+"/debug/config"),
				"sink keys":     keys.String(),
				"spool":         readTree(t, spoolDir),
			}
			require.Contains(t, texts["/debug/config"], config.RedactedValue)
			require.Contains(t, texts["/metrics"], "remote_write:http://bob:xxxxx@", "sink labels show the URL, redacted")
			require.Contains(t, texts["/metrics"], "?access_token=xxxxx", "query credentials too")
			require.Contains(t, texts["/debug/config"], "api_key=xxxxx")
			require.NotEmpty(t, texts["spool"])
			shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_ = a.Shutdown(shutdownCtx) // logs what it could not send
			cancelShutdown()
			texts["logs"] = logs.String()
			require.Contains(t, texts["logs"], "Librato refused a request")
			require.Contains(t, texts["logs"], "handler config refused")
			require.Contains(t, texts["logs"], "HTTP 401")
			for where, text := range texts {
				for _, secret := range allSecrets {
					require.NotContains(t, text, secret, "%s shows a secret", where)
				}
			}
		})
	}
}

// keyRecorder records the keys a factory gives, as the Set and the spool
// use them.
type keyRecorder struct {
	sinks.Factory
	keys *keyLog
}

func (k keyRecorder) Key(p *config.Params) string {
	key := k.Factory.Key(p)
	if key != "" {
		_, _ = k.keys.Write([]byte(key + "\n"))
	}
	return key
}

type keyLog = syncBuffer

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// readTree concatenates every file under dir, names included.
func readTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		b.WriteString(path + "\n")
		b.Write(data)
		return nil
	}))
	return b.String()
}
