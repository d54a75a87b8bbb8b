package mixertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// ConfigDir makes a config directory for the Mixer-less mode
// (AdapterOptions.ConfigDir) in the test's temporary directory: a copy of
// each file or directory of paths, and each source written as its own
// file. The adapter and metric template CRs and Istio's attribute manifests
// are built into the adapter; the directory needs only handlers, instances
// and rules.
func ConfigDir(t testing.TB, paths []string, sources ...crd.Source) string {
	t.Helper()
	dir := t.TempDir()
	for i, p := range paths {
		dest := filepath.Join(dir, fmt.Sprintf("%02d-%s", i, filepath.Base(p)))
		if err := os.CopyFS(dest, os.DirFS(p)); err != nil {
			// A file, not a directory.
			data, rerr := os.ReadFile(p)
			if rerr != nil {
				t.Fatalf("mixertest: config dir: %v", rerr)
			}
			if werr := os.WriteFile(dest, data, 0o600); werr != nil {
				t.Fatalf("mixertest: config dir: %v", werr)
			}
		}
	}
	for i, s := range sources {
		name := filepath.Base(s.Name)
		if filepath.Ext(name) != ".yaml" && filepath.Ext(name) != ".yml" {
			name += ".yaml"
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("src%02d-%s", i, name)), s.Data, 0o600); err != nil {
			t.Fatalf("mixertest: config dir: %v", err)
		}
	}
	return dir
}

// EnvoyOptions configure an Envoy that streams access logs.
type EnvoyOptions struct {
	// Address of the adapter (a.GRPCAddr()).
	Address string
	// Conn.Auth, when set, is how to reach it: TLS, mutual TLS or a token,
	// as a handler's connection.authentication says (plaintext when nil).
	// Conn.Address is ignored.
	Conn conn.Options
	// V2 streams on the v2 method, as Envoy 1.17 and earlier (Istio 1.7's
	// sidecars) do; the default is v3.
	V2 bool
	// NodeID and LogName identify the stream (defaults: "mixertest" and
	// "mixertest").
	NodeID, LogName string
	// EntriesPerMessage caps the entries of one message (default 100).
	EntriesPerMessage int
	// Timeout bounds each Send (default 10s).
	Timeout time.Duration
}

// Envoy streams access-log entries to an adapter as Envoy's gRPC access
// logger does.
type Envoy struct {
	o  EnvoyOptions
	cc *grpc.ClientConn
}

// NewEnvoy connects to the adapter; the connection closes when the test
// ends.
func NewEnvoy(t testing.TB, o EnvoyOptions) *Envoy {
	t.Helper()
	if o.NodeID == "" {
		o.NodeID = "mixertest"
	}
	if o.LogName == "" {
		o.LogName = "mixertest"
	}
	if o.EntriesPerMessage <= 0 {
		o.EntriesPerMessage = 100
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	co := o.Conn
	co.Address = o.Address
	cc, err := conn.Dial(co)
	if err != nil {
		t.Fatalf("mixertest: envoy: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &Envoy{o: o, cc: cc}
}

// Conn is the client connection, for accesslog.Load and streams of your own.
func (e *Envoy) Conn() *grpc.ClientConn { return e.cc }

// Method is the gRPC method the Envoy streams on.
func (e *Envoy) Method() string {
	if e.o.V2 {
		return accesslog.MethodV2
	}
	return accesslog.MethodV3
}

// Send streams the entries on one new stream, grouped into messages as
// Envoy's buffer groups them, and ends it. The adapter answers a stream
// once it has processed every message, so when Send returns nil every entry
// has gone through the rules into the handlers (Adapter.Recorded or
// Adapter.Series then flush the sinks).
func (e *Envoy) Send(entries ...accesslog.Entry) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.o.Timeout)
	defer cancel()
	st, err := accesslog.Open(ctx, e.cc, e.Method())
	if err != nil {
		return err
	}
	for _, m := range accesslog.Messages(accesslog.Identifier(e.o.NodeID, "", e.o.LogName), entries, e.o.EntriesPerMessage) {
		var send proto.Message = m
		if e.o.V2 {
			if send, err = accesslog.V2(m); err != nil {
				return err
			}
		}
		if err := st.Send(send); err != nil {
			if errors.Is(err, io.EOF) { // the stream ended: Close says why
				break
			}
			return err
		}
	}
	return st.Close()
}

// RequireSend is Send, failing the test on an error.
func (e *Envoy) RequireSend(t testing.TB, entries ...accesslog.Entry) {
	t.Helper()
	if err := e.Send(entries...); err != nil {
		t.Fatalf("mixertest: envoy: %v", err)
	}
}

// SendHTTP sends HTTP entries built in Go, failing the test on an error.
func (e *Envoy) SendHTTP(t testing.TB, entries ...*alsdata.HTTPAccessLogEntry) {
	t.Helper()
	e.RequireSend(t, accesslog.HTTP(entries...)...)
}

// SendTCP sends TCP entries built in Go, failing the test on an error.
func (e *Envoy) SendTCP(t testing.TB, entries ...*alsdata.TCPAccessLogEntry) {
	t.Helper()
	e.RequireSend(t, accesslog.TCP(entries...)...)
}

// SendFile sends the entries of an entries file (accesslog.EntriesFormat,
// as `mockmixer accesslog --entries` reads), failing the test on an error.
func (e *Envoy) SendFile(t testing.TB, path string) []accesslog.Entry {
	t.Helper()
	entries, err := accesslog.ReadEntries(path)
	if err != nil {
		t.Fatalf("mixertest: %v", err)
	}
	e.RequireSend(t, entries...)
	return entries
}

// Entries reads entries written in the entries format
// (accesslog.EntriesFormat), failing the test on an error: entries inline
// in a test.
func Entries(t testing.TB, yaml string) []accesslog.Entry {
	t.Helper()
	entries, err := accesslog.ParseEntries(t.Name(), []byte(yaml), time.Now())
	if err != nil {
		t.Fatalf("mixertest: %v", err)
	}
	return entries
}
