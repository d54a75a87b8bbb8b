package mixerless_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
)

// countingConfig counts every HTTP entry as entries_total{config=<label>}.
func countingConfig(label string) string {
	return fmt.Sprintf(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: counting, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    prometheus: {}
    metrics:
    - {name: entries_total, instance_name: entrycount.instance.istio-system, kind: COUNTER, label_names: [config]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: entrycount, namespace: istio-system}
spec:
  template: metric
  params:
    value: "1"
    dimensions: {config: '"%s"'}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: counting, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions: [{handler: counting, instances: [entrycount]}]
`, label)
}

// writeAtomically replaces a file the way a ConfigMap update does: the new
// content appears whole.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func readyz(t *testing.T, a *adapter.Adapter) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.HTTPAddr() + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestReloadUnderLoad edits the config directory while entries stream in:
// the new config takes over without losing an accepted entry (every entry
// is counted once, by the old config or by the new one), and a broken edit
// keeps the last good config running, visible on /readyz and in metrics.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(file, []byte(countingConfig("A")), 0o600))
	a := startAdapter(t, dir, adapter.ALSOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		st, finish := alsStream(t, ctx, a.GRPCAddr(), envoyals.MethodV3)
		entries := make([]*alsdata.HTTPAccessLogEntry, 10)
		for i := range entries {
			entries[i] = httpEntry("reviews.default.svc.cluster.local", "/x", 200, corev3.RequestMethod_GET, nil)
		}
		for first := true; ; first = false {
			select {
			case <-stop:
				done <- finish()
				return
			default:
			}
			if err := st.SendMsg(httpMessage(first, entries...)); err != nil {
				done <- err
				return
			}
			sent.Add(int64(len(entries)))
			time.Sleep(time.Millisecond)
		}
	}()
	value := func(label string) float64 {
		return exposed(scrape(t, a), "istio_entries_total")[fmt.Sprintf(`istio_entries_total{config=%q}`, label)]
	}
	require.Eventually(t, func() bool { return value("A") > 100 }, 20*time.Second, 20*time.Millisecond)

	writeAtomically(t, file, countingConfig("B"))
	require.Eventually(t, func() bool { return value("B") > 100 }, 20*time.Second, 20*time.Millisecond)

	// A broken edit: the last good config keeps counting.
	broken := filepath.Join(dir, "broken.yaml")
	require.NoError(t, os.WriteFile(broken, []byte("apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: bad, namespace: istio-system}\nspec:\n  match: request.path ==\n"), 0o600))
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, a), "\nmeshmetrics_config_last_reload_successful 0\n")
	}, 20*time.Second, 20*time.Millisecond)
	code, body := readyz(t, a)
	require.Equal(t, http.StatusOK, code, "the last good config still serves")
	require.Contains(t, body, "failed and was not applied")
	require.Contains(t, body, broken+":1", "the refusal names the file and line")
	before := value("B")
	require.Eventually(t, func() bool { return value("B") > before+100 }, 20*time.Second, 20*time.Millisecond)
	text := scrape(t, a)
	require.Contains(t, text, `meshmetrics_config_reloads_total{result="failure"} 1`, "logged and counted once, not once per poll")

	require.NoError(t, os.Remove(broken))
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, a), "\nmeshmetrics_config_last_reload_successful 1\n")
	}, 20*time.Second, 20*time.Millisecond)
	_, body = readyz(t, a)
	require.NotContains(t, body, "failed", strings.Join(metricLines(scrape(t, a), "meshmetrics_config_last_reload_successful"), "\n")+strings.Join(metricLines(scrape(t, a), "meshmetrics_config_reloads_total"), "\n"))

	close(stop)
	require.NoError(t, <-done)
	require.NoError(t, a.Flush(ctx))
	a2, b2 := value("A"), value("B")
	require.Equal(t, float64(sent.Load()), a2+b2, "every entry sent is counted exactly once (A %g + B %g)", a2, b2)
	text = scrape(t, a)
	require.Contains(t, text, `meshmetrics_config_reloads_total{result="success"} 3`)
	require.Contains(t, text, `meshmetrics_accesslog_skipped_total{reason="queue_full"} 0`)
}

// TestUnusedDimensions: a dimension no metric of the handler uses is not
// sent, but one that can fail is still evaluated, so that its failure drops
// the instance as in Mixer (here request.path, which TCP entries lack).
func TestUnusedDimensions(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "c.yaml"), []byte(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: h, namespace: istio-system}
spec:
  adapter: meshmetrics
  params:
    prometheus: {}
    metrics:
    - {name: seen_total, instance_name: seen.instance.istio-system, kind: COUNTER, label_names: [protocol]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: seen, namespace: istio-system}
spec:
  template: metric
  params:
    value: "1"
    dimensions: {protocol: context.protocol, path: request.path, host: request.host | "none"}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  actions: [{handler: h, instances: [seen]}]
`), 0o600))
	a := startAdapter(t, dir, adapter.ALSOptions{})
	tr := makeTraffic(0)
	send(t, a.GRPCAddr(), envoyals.MethodV3, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.Flush(ctx))
	text := scrape(t, a)
	require.Equal(t, map[string]float64{`istio_seen_total{protocol="http"}`: float64(len(tr.http))}, exposed(text, "istio_seen_total"),
		"only the label the metric names; no TCP series: their instance failed on request.path")
	require.Contains(t, text, fmt.Sprintf(`meshmetrics_accesslog_skipped_total{reason="instance_error"} %d`, len(tr.tcp)))
	require.Contains(t, text, `meshmetrics_accesslog_skipped_total{reason="unknown_instance"} 0`)
}

// configMapVolume lays files out as the kubelet's atomic writer does in a
// mounted ConfigMap (k8s.io/kubernetes/pkg/volume/util/atomic_writer.go):
// the files in a "..<timestamp>" directory, "..data" linked to it, and each
// key a link to "..data/<key>". Calling the returned function again
// publishes new content as the kubelet does: a new directory, "..data"
// swapped by a rename, the old directory removed.
func configMapVolume(t *testing.T, dir string) func(files map[string]string) {
	t.Helper()
	var old string
	n := 0
	return func(files map[string]string) {
		n++
		ts := fmt.Sprintf("..2024_01_01_00_00_%02d.%09d", n, n)
		require.NoError(t, os.Mkdir(filepath.Join(dir, ts), 0o755))
		for name, content := range files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, ts, name), []byte(content), 0o644))
			link := filepath.Join(dir, name)
			if _, err := os.Lstat(link); os.IsNotExist(err) {
				require.NoError(t, os.Symlink(filepath.Join("..data", name), link))
			}
		}
		require.NoError(t, os.Symlink(ts, filepath.Join(dir, "..data_tmp")))
		require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		if old != "" {
			require.NoError(t, os.RemoveAll(filepath.Join(dir, old)))
		}
		old = ts
	}
}

// TestConfigMapVolume runs on a config directory mounted from a ConfigMap
// (the Helm chart's mixerless.* option): each file is read once, through
// its link, and an update of the ConfigMap is a reload.
func TestConfigMapVolume(t *testing.T) {
	dir := t.TempDir()
	publish := configMapVolume(t, dir)
	publish(map[string]string{"config.yaml": countingConfig("A")})
	a := startAdapter(t, dir, adapter.ALSOptions{})
	value := func(label string) float64 {
		return exposed(scrape(t, a), "istio_entries_total")[fmt.Sprintf(`istio_entries_total{config=%q}`, label)]
	}
	tr := makeTraffic(0)
	send(t, a.GRPCAddr(), envoyals.MethodV3, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.Flush(ctx))
	require.Equal(t, float64(len(tr.http)), value("A"))

	publish(map[string]string{"config.yaml": countingConfig("B")})
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, a), `meshmetrics_config_reloads_total{result="success"} 2`)
	}, 20*time.Second, 20*time.Millisecond, "the swap of ..data is a change")
	send(t, a.GRPCAddr(), envoyals.MethodV3, tr)
	require.NoError(t, a.Flush(ctx))
	require.Equal(t, float64(len(tr.http)), value("B"))
	require.Contains(t, scrape(t, a), `meshmetrics_config_reloads_total{result="failure"} 0`)
}
