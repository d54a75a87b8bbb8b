package mixerless_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// clashing is two handlers, each valid alone, whose series names clash in
// the exposition: the second one built is refused when it binds.
const clashing = `apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: counts, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    metrics:
    - {name: latency_bucket, instance_name: entrycount.instance.istio-system, kind: COUNTER, label_names: [config]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: histograms, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    metrics:
    - {name: latency, instance_name: entrycount.instance.istio-system, kind: DISTRIBUTION, label_names: [config]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: entrycount, namespace: istio-system}
spec:
  template: metric
  params:
    value: "1"
    dimensions: {config: '"A"'}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: both, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions:
  - {handler: counts, instances: [entrycount]}
  - {handler: histograms, instances: [entrycount]}
`

// TestTheAdaptersRefusalNamesTheHandlerCR: in the Mixer-less mode, a
// handler config the adapter refuses when it builds it is logged with its
// CR's name and file:line, not only by its digest, and the message says
// which field is wrong.
func TestTheAdaptersRefusalNamesTheHandlerCR(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(file, []byte(clashing), 0o600))
	var logs lockedBuffer
	log := logrus.New()
	log.SetOutput(&logs)
	a, err := adapter.New(adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "r", Log: log,
		ShutdownTimeout: 5 * time.Second, ConfigDir: dir})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, finish := alsStream(t, ctx, a.GRPCAddr(), envoyals.MethodV3)
	require.NoError(t, st.SendMsg(httpMessage(true, httpEntry("reviews.default.svc.cluster.local", "/x", 200, corev3.RequestMethod_GET, nil))))
	require.NoError(t, finish())
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "handler config refused") }, 10*time.Second, 10*time.Millisecond)

	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=warning msg=\"handler config refused") {
			line = l
		}
	}
	require.Regexp(t, regexp.MustCompile(`handler=[0-9a-f]{12} `), line)
	require.Regexp(t, regexp.MustCompile(`handler_cr=(counts|histograms)\.handler\.istio-system `), line, "named by its CR")
	require.Contains(t, line, "source=\""+file+":", "and its file and line")
	require.Contains(t, line, "metrics[0]", "the field at fault")
	require.Regexp(t, regexp.MustCompile(`level=error msg="instances not dispatched: handler config refused: .*" handler=[0-9a-f]{12} handler_cr=(counts|histograms)\.handler\.istio-system source=`),
		logs.String(), "the access-log path names it the same way")
	built := regexp.MustCompile(`msg="handler config built" handler=[0-9a-f]{12} handler_cr=(counts|histograms)\.handler\.istio-system`)
	require.Regexp(t, built, logs.String(), "the one that was built is named too")
}
