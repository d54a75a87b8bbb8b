package envoyals_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
)

// sink records what it is given; a message whose first entry's path is
// "/panic" makes it panic.
type sink struct {
	mu      sync.Mutex
	entries map[logentry.API]int
	names   []string
}

func (s *sink) Entries(m *logentry.Message, api logentry.API) {
	var e logentry.Entry
	if m.Len() > 0 && m.Entry(0, &e) == nil && string(e.Request.Path) == "/panic" {
		panic("boom")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[api] += m.Len()
	if m.Identifier {
		s.names = append(s.names, string(m.LogName))
	}
}

func (s *sink) count(api logentry.API) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[api]
}

type server struct {
	srv       *grpcserver.Server
	svc       *envoyals.Service
	addr      string
	malformed atomic.Int64
	refused   atomic.Int64
}

func start(t *testing.T, s *sink, token *grpcserver.TokenCheck) *server {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	out := &server{}
	out.svc = envoyals.New(envoyals.Options{Sink: s, Limiter: logging.NewLimiter(log, time.Minute), OnMalformed: func() { out.malformed.Add(1) }})
	srv, err := grpcserver.New(grpcserver.Options{Log: log, Services: []grpcserver.Service{out.svc}, Token: token,
		MaxRecvMsgSize: 4 << 20, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Minute, KeepaliveTime: time.Hour, KeepaliveTimeout: time.Minute,
		OnRefusedWhileDraining: func(string) { out.refused.Add(1) }})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	out.srv, out.addr = srv, lis.Addr().String()
	return out
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func message(t *testing.T, path string, n int) []byte {
	m := accesslog.HTTPMessage(&alsv3.StreamAccessLogsMessage_Identifier{LogName: "log-" + path})
	for i := 0; i < n; i++ {
		e := accesslog.RealisticHTTPEntry(i)
		e.Request.Path = path
		m.GetHttpLogs().LogEntry = append(m.GetHttpLogs().LogEntry, e)
	}
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

// TestStreamsReachTheSink: v3 and v2 streams, messages in order, a
// malformed message skipped with the stream kept, the answer once the
// stream ends.
func TestStreamsReachTheSink(t *testing.T) {
	s := &sink{entries: map[logentry.API]int{}}
	srv := start(t, s, nil)
	conn := dial(t, srv.addr)
	ctx := context.Background()
	for _, method := range []string{accesslog.MethodV3, accesslog.MethodV2} {
		st, err := accesslog.Open(ctx, conn, method)
		require.NoError(t, err)
		require.NoError(t, st.SendRaw(message(t, "/a", 3)))
		require.NoError(t, st.SendRaw([]byte{0x12, 0x05, 0x0a})) // truncated
		require.NoError(t, st.SendRaw(message(t, "/b", 2)))
		require.NoError(t, st.Close())
	}
	require.Equal(t, 5, s.count(logentry.APIv3))
	require.Equal(t, 5, s.count(logentry.APIv2))
	require.Equal(t, int64(2), srv.malformed.Load())
	require.Equal(t, []string{"log-/a", "log-/b", "log-/a", "log-/b"}, s.names)
}

// TestPanicInAStreamIsRecovered: a panic while processing a message ends
// that stream with Internal; the server goes on serving.
func TestPanicInAStreamIsRecovered(t *testing.T) {
	s := &sink{entries: map[logentry.API]int{}}
	srv := start(t, s, nil)
	conn := dial(t, srv.addr)
	ctx := context.Background()
	st, err := accesslog.Open(ctx, conn, accesslog.MethodV3)
	require.NoError(t, err)
	require.NoError(t, st.SendRaw(message(t, "/panic", 1)))
	err = st.Close()
	require.Equal(t, codes.Internal, status.Code(err), "%v", err)

	st, err = accesslog.Open(ctx, conn, accesslog.MethodV3)
	require.NoError(t, err)
	require.NoError(t, st.SendRaw(message(t, "/ok", 4)))
	require.NoError(t, st.Close())
	require.Equal(t, 4, s.count(logentry.APIv3))
}

// TestStreamsNeedTheToken: the token check applies to streams; the health
// service's Watch needs none.
func TestStreamsNeedTheToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("tok3n"), 0o600))
	token, err := grpcserver.NewTokenCheck(file, "", &logging.Secrets{}, logging.NewLimiter(logrus.New(), time.Second))
	require.NoError(t, err)
	var refused []string
	var mu sync.Mutex
	token.OnRefuse = func(r string) {
		mu.Lock()
		defer mu.Unlock()
		refused = append(refused, r)
	}
	s := &sink{entries: map[logentry.API]int{}}
	srv := start(t, s, token)
	conn := dial(t, srv.addr)
	send := func(ctx context.Context) error {
		st, err := accesslog.Open(ctx, conn, accesslog.MethodV3)
		if err != nil {
			return err
		}
		if err := st.SendRaw(message(t, "/t", 1)); err != nil {
			return st.Close()
		}
		return st.Close()
	}
	require.Equal(t, codes.Unauthenticated, status.Code(send(context.Background())))
	require.Equal(t, codes.Unauthenticated, status.Code(send(metadata.AppendToOutgoingContext(context.Background(), "authorization", "nope"))))
	require.NoError(t, send(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok3n")))
	require.Equal(t, 1, s.count(logentry.APIv3))
	mu.Lock()
	require.Equal(t, []string{"missing_token", "wrong_token"}, refused)
	mu.Unlock()
}

// TestDrainEndsStreams: Shutdown ends an open stream once the message in
// hand is processed, without waiting for Envoy to close it.
func TestDrainEndsStreams(t *testing.T) {
	s := &sink{entries: map[logentry.API]int{}}
	srv := start(t, s, nil)
	conn := dial(t, srv.addr)
	ctx := context.Background()
	st, err := accesslog.Open(ctx, conn, accesslog.MethodV3)
	require.NoError(t, err)
	require.NoError(t, st.SendRaw(message(t, "/d", 2)))
	require.Eventually(t, func() bool { return s.count(logentry.APIv3) == 2 }, 5*time.Second, 5*time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	begin := time.Now()
	require.NoError(t, srv.srv.Shutdown(sctx))
	require.Less(t, time.Since(begin), 5*time.Second)
	require.Error(t, st.Close())
	require.Equal(t, 2, s.count(logentry.APIv3), "the message in hand was processed")
}
