package faults_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/types"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// buildAdapter builds cmd/meshmetrics, as a user runs it, once per run of
// the suite (TestMain removes it).
func buildAdapter(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "meshmetrics-faults-"); built.err != nil {
			return
		}
		bin := filepath.Join(built.dir, "meshmetrics")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/meshmetrics/meshmetrics/cmd/meshmetrics").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %w: %s", err, out)
			return
		}
		built.bin = bin
	})
	require.NoError(t, built.err)
	return built.bin
}

// process is a running cmd/meshmetrics.
type process struct {
	cmd        *exec.Cmd
	grpc, http string
	mu         sync.Mutex
	logs       strings.Builder
	exited     chan error
}

// run starts the adapter on free ports and waits until it serves.
func run(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"--grpc-address=127.0.0.1:0", "--http-address=127.0.0.1:0",
		"--log-format=json", "--replica=kill-test"}, args...)...)
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var e struct {
				Msg  string `json:"msg"`
				GRPC string `json:"grpc"`
				HTTP string `json:"http"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "meshmetrics serving" {
				p.mu.Lock()
				p.grpc, p.http = e.GRPC, e.HTTP
				p.mu.Unlock()
				once.Do(func() { close(serving) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
	})
	select {
	case <-serving:
	case err := <-p.exited:
		t.Fatalf("meshmetrics exited before serving: %v\n%s", err, p.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("meshmetrics did not start:\n%s", p.log())
	}
	return p
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// metrics scrapes /metrics.
func (p *process) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + p.http + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// value sums the samples of name whose label sink starts with prefix (and
// whose other labels match want).
func value(mfs map[string]*dto.MetricFamily, name, sinkPrefix string, want map[string]string) float64 {
	var total float64
	mf := mfs[name]
	if mf == nil {
		return 0
	}
metrics:
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "sink" && !strings.HasPrefix(l.GetValue(), sinkPrefix) {
				continue metrics
			}
			if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
				continue metrics
			}
		}
		switch {
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// send sends calls requests of perCall instances over paths series named
// prefix-<n>, and returns the number of instances.
func send(t *testing.T, conn *grpc.ClientConn, cfg *types.Any, prefix string, calls, perCall, paths int) int {
	t.Helper()
	c := metricpb.NewHandleMetricServiceClient(conn)
	for i := 0; i < calls; i++ {
		ins := make([]*metricpb.InstanceMsg, perCall)
		for j := range ins {
			ins[j] = &metricpb.InstanceMsg{Name: instanceName, Value: mt.Int(1),
				Dimensions: map[string]*policypb.Value{"path": mt.Str(fmt.Sprintf("%s-%d", prefix, (i+j)%paths))}}
		}
		_, err := c.HandleMetric(context.Background(), &metricpb.HandleMetricRequest{AdapterConfig: cfg, Instances: ins,
			DedupId: fmt.Sprintf("%s-%d", prefix, i)})
		require.NoError(t, err)
	}
	return calls * perCall
}

// TestKill9DuringAnOutageLosesNothingSpooled runs the adapter binary with a
// spool, sends instances while the backends (Librato, remote write, OTLP
// with delta temporality) are down, kills it with
// SIGKILL once they are in the spool, leaves a torn spool file behind (what
// a kill in the middle of a write leaves), and starts it again with the
// backends up: the first run's instances arrive, the torn file is counted,
// and the process stays up.
func TestKill9DuringAnOutageLosesNothingSpooled(t *testing.T) {
	t.Parallel()
	bin := buildAdapter(t)
	spool := t.TempDir()
	lib := libratotest.New()
	defer lib.Close()
	rw := rwtest.New()
	defer rw.Close()
	otel := otlptest.New()
	defer otel.Close()
	lib.GoDown(0)
	rw.GoDown(0)
	otel.GoDown(0)
	otlpParams := otlpBlock(otel, otlpHTTPKind)
	otlpParams.Interval = 100 * time.Millisecond
	cfg := anyOf(t, &config.Params{
		Metrics: []*config.Params_MetricInfo{requestsMetric},
		Librato: &config.LibratoParams{Url: lib.URL(), Email: libratotest.DefaultEmail, Token: libratotest.DefaultToken,
			Period: time.Second, RequestTimeout: time.Second},
		Prometheus: &config.PrometheusParams{DisableExposition: true, RemoteWrite: &config.RemoteWrite{
			Url: rw.URL(), Interval: 100 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			Timeout: time.Second}},
		Otlp: otlpParams,
	})
	const paths = 5

	p1 := run(t, bin, "--spool-dir="+spool)
	before := send(t, dial(t, p1.grpc), cfg, "/before", 20, 10, paths)
	// Wait until the Librato period has closed into the spool, and the
	// remote-write sink has consumed everything and spooled two pushes
	// since: the later one carries the final cumulative values.
	require.Eventually(t, func() bool {
		m := p1.metrics(t)
		return value(m, "meshmetrics_spool_instances", "librato:", nil) == float64(before) &&
			value(m, "meshmetrics_spool_instances", "otlp:", nil) == float64(before) &&
			value(m, "meshmetrics_queue_depth", "remote_write:", nil) == 0
	}, 30*time.Second, 10*time.Millisecond, "the first run spools its instances")
	spooled := value(p1.metrics(t), "meshmetrics_spool_requests", "remote_write:", nil)
	require.Eventually(t, func() bool {
		return value(p1.metrics(t), "meshmetrics_spool_requests", "remote_write:", nil) >= spooled+2
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, p1.cmd.Process.Signal(syscall.SIGKILL))
	require.Error(t, <-p1.exited, "killed")

	// A torn write: a request file cut short next to the sound ones.
	dirs, err := filepath.Glob(filepath.Join(spool, "*", "SINK"))
	require.NoError(t, err)
	require.Len(t, dirs, 3, "a directory per destination")
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(dirs[0]), "7fffffffffffffff.req"), []byte("MMSQ\x01torn"), 0o600))

	lib.Up()
	rw.Up()
	otel.Up()
	p2 := run(t, bin, "--spool-dir="+spool)
	after := send(t, dial(t, p2.grpc), cfg, "/after", 10, 10, paths)
	require.Eventually(t, func() bool {
		return lib.Total(libratoName) == float64(before+after) && rw.Total(rwName) == float64(before+after) &&
			otel.Total(otlpName) == float64(before+after)
	}, 30*time.Second, 10*time.Millisecond, "the spooled instances and the new ones arrive")
	require.Empty(t, otel.Violations())

	var replayed float64
	for key, v := range rw.Last(rwName) {
		if strings.Contains(key, `path="/before-`) {
			replayed += v
		}
	}
	require.Equal(t, float64(before), replayed, "the first run's series end at its totals")
	require.Empty(t, rw.Violations())
	m := p2.metrics(t)
	require.Equal(t, 1.0, value(m, "meshmetrics_spool_corrupt_files_total", "", nil), "the torn file is counted")
	require.Zero(t, value(m, "meshmetrics_instances_dropped_total", "", nil), "nothing else is lost")
	require.Eventually(t, func() bool {
		return value(p2.metrics(t), "meshmetrics_spool_requests", "", nil) == 0
	}, 30*time.Second, 10*time.Millisecond, "the spool empties")

	_, err = export.OpenSpool(export.SpoolOptions{Dir: spool, MaxBytes: 1 << 20})
	require.ErrorContains(t, err, "in use by another process", "one spool, one process")

	require.NoError(t, p2.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, <-p2.exited, "a clean exit after SIGTERM:\n%s", p2.log())
	files, err := filepath.Glob(filepath.Join(spool, "*", "*.req"))
	require.NoError(t, err)
	require.Empty(t, files)
	t.Logf("figures %s: %d instances spooled before the kill, all delivered after the restart, plus %d sent after it", t.Name(), before, after)
}
