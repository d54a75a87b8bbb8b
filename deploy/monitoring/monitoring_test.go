package monitoring

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/loadgen"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
)

// Files under test, relative to this package.
const (
	rulesFile     = "../prometheus/meshmetrics.rules.yaml"
	rulesTestFile = "../prometheus/meshmetrics.rules.test.yaml"
	dashboardFile = "../grafana/meshmetrics.json"
)

func TestRulesPassPromtool(t *testing.T) {
	promtool := ensureTool(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "SUCCESS")
	// Unit tests: each alert fires on the series it is about, after its
	// `for`, and stays quiet on the others.
	out, err = exec.Command(promtool, "test", "rules", rulesTestFile).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "SUCCESS")

	// Every alert has a unit test.
	tests, err := os.ReadFile(rulesTestFile)
	require.NoError(t, err)
	for _, a := range readAlerts(t) {
		require.Contains(t, string(tests), "alertname: "+a.Alert, "%s has no promtool unit test", a.Alert)
	}
}

func TestPromtoolCatchesBrokenRules(t *testing.T) {
	// promtool must fail on a rule file that is wrong, or the test above
	// proves nothing.
	promtool := ensureTool(t, "promtool")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.rules.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum by (sink (rate(x[5m]))\n"), 0o600))
	out, err := exec.Command(promtool, "check", "rules", bad).CombinedOutput()
	require.Error(t, err, "%s", out)
}

// alertRule is an alerting rule of the rule file.
type alertRule struct {
	Alert string `json:"alert"`
	Expr  string `json:"expr"`
}

func readAlerts(t *testing.T) []alertRule {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	var f struct {
		Groups []struct {
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(data, &f))
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	require.NotEmpty(t, out)
	return out
}

// dashboardExprs are the dashboard's PromQL expressions, by panel title.
func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	out := map[string][]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	require.NotEmpty(t, out)
	return out
}

// grafanaVars are what Grafana puts in for the dashboard's variables: the
// test's job, every replica, and a rate window that holds several scrapes.
func grafanaVars(expr string) string {
	return strings.NewReplacer("$__rate_interval", "20s", "$job", "meshmetrics", "$instance", ".+").Replace(expr)
}

// notInduced are the alerts whose condition the end-to-end test does not
// bring about (a queue that stays 80% full, a spool 80% full, both need a
// slow machine or a long outage); their expressions run without the
// threshold, and promtool's unit tests fire them.
func notInduced(alert string) bool {
	return alert == "MeshmetricsQueueNearCapacity" || alert == "MeshmetricsSpoolFilling"
}

// TestDashboardAndAlertsAgainstRealPrometheus runs meshmetrics, brings
// about what the alerts are for, has a real Prometheus scrape it and
// evaluate the rule file, and checks that every dashboard expression
// returns data and every alert is pending or firing.
func TestDashboardAndAlertsAgainstRealPrometheus(t *testing.T) {
	promBin := ensureTool(t, "prometheus")
	bin := buildAdapter(t)
	spool := t.TempDir()

	// Backends: one that refuses every push (400), one that is down (503).
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "out of order sample", http.StatusBadRequest)
	}))
	t.Cleanup(refusing.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)

	// A first run spools pushes for a destination that is down, and is
	// killed: the second run finds them with no handler config naming that
	// destination (orphaned), next to a torn file (corrupt).
	first := startAdapter(t, bin, "--spool-dir="+spool)
	orphanCfg := handlerConfig(t, map[string]any{"prometheus": map[string]any{"disable_exposition": true,
		"remote_write": remoteWrite(down.URL)}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := loadgen.Run(ctx, load(first.grpc, orphanCfg, 20))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return scrapeValue(t, first.http, "meshmetrics_spool_requests") >= 2 },
		30*time.Second, 50*time.Millisecond, "the first run spools its pushes")
	first.kill(t)
	dirs, err := filepath.Glob(filepath.Join(spool, "*", "SINK"))
	require.NoError(t, err)
	require.Len(t, dirs, 1)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(dirs[0]), "7fffffffffffffff.req"), []byte("MMSQ\x01torn"), 0o600))

	// The second run, scraped by Prometheus next to a replica that is down.
	second := startAdapter(t, bin, "--spool-dir="+spool)
	prom := startPrometheus(t, promBin, []string{second.http, deadAddress(t)})

	// A handler config served and remote-written to Prometheus itself, with
	// a series cap the load exceeds; one remote-writing to the backend that
	// refuses; one the adapter refuses.
	good := handlerConfig(t, map[string]any{
		"prometheus": map[string]any{"remote_write": remoteWrite(prom + "/api/v1/write")},
		"limits":     map[string]any{"max_series_per_metric": 20},
	})
	refused := handlerConfig(t, map[string]any{"prometheus": map[string]any{"disable_exposition": true,
		"remote_write": remoteWrite(refusing.URL)}})
	bad := handlerConfig(t, map[string]any{"metrics": []any{map[string]any{"name": "no_kind", "instance_name": loadInstance}}})

	// Counters must be scraped at 0 before their first event, or rate()
	// and increase() miss it: wait for the first scrape.
	require.Eventually(t, func() bool {
		return len(query(t, prom, `meshmetrics_config_errors_total{reason="validation"} == 0`)) == 1
	}, 30*time.Second, 100*time.Millisecond, "Prometheus does not scrape the adapter")

	// Keep the load on while the checks poll, so rates stay above zero.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, cfg := range []*types.Any{good, refused, bad} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				_, _ = loadgen.Run(loadCtx, load(second.grpc, cfg, 10))
				select {
				case <-loadCtx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	t.Cleanup(func() { stopLoad(); wg.Wait() })

	t.Run("dashboard", func(t *testing.T) {
		for title, exprs := range dashboardExprs(t) {
			for _, e := range exprs {
				q := grafanaVars(e)
				var last []sample
				ok := eventually(90*time.Second, func() bool {
					last = query(t, prom, q)
					for _, s := range last {
						if !math.IsNaN(s.value) && !math.IsInf(s.value, 0) {
							return true
						}
					}
					return false
				})
				require.True(t, ok, "panel %q: %s returned no finite value: %+v", title, q, last)
			}
		}
	})

	t.Run("alerts", func(t *testing.T) {
		alerts := readAlerts(t)
		for _, a := range alerts {
			if notInduced(a.Alert) {
				// The expression without its threshold: the metrics and
				// labels it reads exist and the arithmetic holds.
				q := stripThreshold(t, a.Expr)
				var last []sample
				ok := eventually(90*time.Second, func() bool { last = query(t, prom, q); return len(last) > 0 })
				require.True(t, ok, "%s: %s returned nothing", a.Alert, q)
				continue
			}
			var states map[string]string
			ok := eventually(90*time.Second, func() bool {
				states = alertStates(t, prom)
				s := states[a.Alert]
				return s == "pending" || s == "firing"
			})
			require.True(t, ok, "alert %s did not become pending (its expression returned nothing): states %v", a.Alert, states)
		}
		// The rule file loaded into the real Prometheus with every rule
		// healthy (no evaluation errors).
		for name, health := range ruleHealth(t, prom) {
			require.Equal(t, "ok", health, "rule %s", name)
		}
		require.Len(t, ruleHealth(t, prom), len(alerts))
	})
}

// stripThreshold removes the final comparison of an alert expression.
func stripThreshold(t *testing.T, expr string) string {
	t.Helper()
	re := regexp.MustCompile(`\s*(>|<|>=|<=|==|!=)\s*[0-9.]+\s*$`)
	require.Regexp(t, re, expr)
	return re.ReplaceAllString(expr, "")
}

func TestStripThreshold(t *testing.T) {
	require.Equal(t, "max by (sink) (a / b)", stripThreshold(t, "max by (sink) (a / b) > 0.8"))
	require.Equal(t, "up", stripThreshold(t, "up == 0"))
}

// The instances the load sends and the metric every handler config makes.
const loadInstance = "loadtest.instance.istio-system"

// load is a short burst: a few requests of 10 instances over 50 series
// (more than the good config's cap of 20 per metric).
func load(addr string, cfg *types.Any, requests int64) loadgen.Config {
	return loadgen.Config{Address: addr, AdapterConfig: cfg, Workers: 2, Conns: 1, Requests: requests, Rate: 50,
		InstancesPerRequest: 10, Series: 50, Dimensions: 3, InstanceName: loadInstance, Seed: 1}
}

func remoteWrite(u string) map[string]any {
	return map[string]any{"url": u, "interval": "1s", "min_backoff": "10ms", "max_backoff": "200ms", "timeout": "2s"}
}

// handlerConfig is the adapter config a handler with these params sends:
// one COUNTER over the load's instances, unless params says otherwise.
func handlerConfig(t *testing.T, p map[string]any) *types.Any {
	t.Helper()
	schema, err := params.Registered("config.proto")
	require.NoError(t, err)
	if _, ok := p["metrics"]; !ok {
		p["metrics"] = []any{map[string]any{"name": "load_requests", "instance_name": loadInstance, "kind": "COUNTER",
			"label_names": []any{"dim0", "dim1", "dim2"}}}
	}
	cfg, err := schema.AdapterConfig(p)
	require.NoError(t, err)
	return cfg
}

// ensureTool returns a binary of Debian's prometheus package, installing
// the package when it is absent (as root, or with sudo), as
// .ci/install-deps does.
func ensureTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	var sudo []string
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			t.Fatalf("%s is not installed and neither root nor sudo is available to install it: run `make deps` as root", name)
		}
		sudo = []string{"sudo", "-n"}
	}
	run := func(args ...string) {
		args = append(sudo, args...)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	run("apt-get", "update", "-qq")
	run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus")
	stop := append(sudo, "service", "prometheus", "stop")
	_ = exec.Command(stop[0], stop[1:]...).Run()
	p, err := exec.LookPath(name)
	require.NoError(t, err, "%s installed but not on PATH", name)
	return p
}

// buildAdapter builds cmd/meshmetrics (deploy/ cannot import the adapter's
// internals; the binary is what runs in the image anyway).
func buildAdapter(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "meshmetrics")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/meshmetrics")
	cmd.Dir = "../.."
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", msg)
	return out
}

// adapterProc is a running meshmetrics.
type adapterProc struct {
	cmd        *exec.Cmd
	grpc, http string
	exited     chan error
}

func startAdapter(t *testing.T, bin string, args ...string) *adapterProc {
	t.Helper()
	args = append([]string{"--grpc-address=127.0.0.1:0", "--http-address=127.0.0.1:0", "--log-format=json",
		"--replica=monitoring-test", "--shutdown-timeout=2s"}, args...)
	p := &adapterProc{cmd: exec.Command(bin, args...), exited: make(chan error, 1)}
	p.cmd.Env = []string{}
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() { p.kill(t) })
	serving := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "meshmetrics serving" {
				serving <- line
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	select {
	case line := <-serving:
		p.grpc, _ = line["grpc"].(string)
		p.http, _ = line["http"].(string)
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("meshmetrics exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("meshmetrics did not start within 30s")
	}
	require.NotEmpty(t, p.grpc)
	require.NotEmpty(t, p.http)
	return p
}

// kill stops the process with SIGKILL (idempotent).
func (p *adapterProc) kill(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	err := <-p.exited
	p.exited <- err
}

// scrapeValue sums a metric family on the adapter's /metrics.
func scrapeValue(t *testing.T, addr, family string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	var sum float64
	if f := fams[family]; f != nil {
		for _, m := range f.Metric {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return sum
}

// deadAddress is a local address nothing listens on.
func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// startPrometheus runs Prometheus on a free local port with a fresh data
// directory, the rule file, and one job, meshmetrics, scraping targets
// every second; it accepts remote write. It returns the base URL.
func startPrometheus(t *testing.T, bin string, targets []string) string {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(rulesFile)
	require.NoError(t, err)
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: meshmetrics
    static_configs:
      - targets: [%s]
`, rules, strings.Join(quoted, ", "))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	addr := deadAddress(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver", "--log.level=warn")
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("prometheus log:\n%s", b)
			}
		}
	})
	base := "http://" + addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "prometheus did not become ready")
	return base
}

type sample struct {
	labels map[string]string
	value  float64
}

func apiGet(t *testing.T, u string, into any) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, body)
	require.NoError(t, json.Unmarshal(body, into))
}

func query(t *testing.T, base, q string) []sample {
	t.Helper()
	var r struct {
		Data struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	apiGet(t, base+"/api/v1/query?query="+url.QueryEscape(q), &r)
	require.Equal(t, "vector", r.Data.ResultType, q)
	var out []sample
	for _, s := range r.Data.Result {
		v, err := strconv.ParseFloat(s.Value[1].(string), 64)
		require.NoError(t, err)
		out = append(out, sample{labels: s.Metric, value: v})
	}
	return out
}

// alertStates maps each alert to its most advanced state (firing, pending).
func alertStates(t *testing.T, base string) map[string]string {
	t.Helper()
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	apiGet(t, base+"/api/v1/alerts", &r)
	out := map[string]string{}
	for _, a := range r.Data.Alerts {
		name := a.Labels["alertname"]
		if out[name] != "firing" {
			out[name] = a.State
		}
	}
	return out
}

// ruleHealth maps each loaded rule to its health.
func ruleHealth(t *testing.T, base string) map[string]string {
	t.Helper()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name   string `json:"name"`
					Health string `json:"health"`
					Error  string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	apiGet(t, base+"/api/v1/rules", &r)
	out := map[string]string{}
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			out[rule.Name] = rule.Health + rule.Error
		}
	}
	return out
}

func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// TestEveryDropReasonIsAlertedOn reads the drop reasons from
// docs/RELIABILITY.md's table (which a test in adapter/internal/telemetry keeps
// equal to the adapter's one list) and checks that the rule file's drop
// alerts name each of them: a new reason cannot drop data without an alert.
func TestEveryDropReasonIsAlertedOn(t *testing.T) {
	doc, err := os.ReadFile("../../docs/RELIABILITY.md")
	require.NoError(t, err)
	start := strings.Index(string(doc), "| reason | where | meaning |")
	require.Positive(t, start)
	table := string(doc)[start:]
	end := strings.Index(table, "\n\n")
	require.Positive(t, end)
	table = table[:end]
	reasons := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(table, -1)
	require.NotEmpty(t, reasons)

	rules, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	var alerted []string
	for _, m := range regexp.MustCompile(`meshmetrics_instances_dropped_total\{reason=~"([a-z_|]+)"\}`).FindAllStringSubmatch(string(rules), -1) {
		alerted = append(alerted, strings.Split(m[1], "|")...)
	}
	for _, r := range reasons {
		require.Contains(t, alerted, r[1], "no alert on drop reason %s", r[1])
	}
}
