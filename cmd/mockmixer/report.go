package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/rules/attributes"
	"github.com/meshmetrics/meshmetrics/adapter/rules/bag"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/dispatch"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

const reportSynopsis = `Evaluates each rule's match and each instance's params on attribute bags, with the config's
attribute manifests (Istio's standard ones when the config has none), and sends one
HandleMetric per handler per report, encoded as Mixer encodes it. Prints what it sent and
what came back. Attributes come from mixc's flags (one bag) or from files of bags (one report
per bag, or --report_batch_size bags per report).

Example:
  mockmixer report -f deploy/kubernetes/adapter.yaml -f deploy/kubernetes/template-metric.yaml \
    -f deploy/kubernetes/samples/analyticcounter.yaml -f deploy/kubernetes/samples/analyticprom-prometheus.yaml \
    --address 127.0.0.1:50000 -s 'request.path=/v1/damage?analytic=1,request.method=GET' -i response.code=200`

// configFlags are the flags that load config and shape dispatch, shared by report and send.
type configFlags struct {
	config           listFlag
	address          string
	defaultNamespace string
	timeout          time.Duration
	dedupRace        bool
}

func (c *configFlags) register(fs *flag.FlagSet) {
	fs.Var(&c.config, "f", "config file or directory of Mixer CRDs (attributemanifest, template, adapter, handler, instance, rule); repeatable")
	fs.Var(&c.config, "config", "same as -f")
	fs.StringVar(&c.address, "address", "", "send every call to this address instead of the handlers' connection.address (e.g. 127.0.0.1:50000 for a local adapter)")
	fs.StringVar(&c.defaultNamespace, "default-namespace", crd.DefaultConfigNamespace, "Mixer's default config namespace: its rules see every request")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of each report's calls (a handler's connection.timeout applies within it)")
	fs.BoolVar(&c.dedupRace, "mixer-dedup-race", false, "reproduce Mixer 1.7's dedup_id race: calls sent at the same moment may share an id (off: every call gets its own)")
}

func (c *configFlags) dispatcher(e env) (*dispatch.Dispatcher, error) {
	if len(c.config) == 0 {
		return nil, fmt.Errorf("no config: pass the adapter, template, handler, instance and rule CRDs with -f")
	}
	store, err := attributes.Load(c.config...)
	if err != nil {
		return nil, err
	}
	d, err := dispatch.New(store, dispatch.Options{DefaultNamespace: c.defaultNamespace, Address: c.address,
		BypassSANVerification: conn.BypassFromEnv(e.getenv), RacyDedup: c.dedupRace})
	if err != nil {
		return nil, err
	}
	for _, w := range d.Warnings() {
		fmt.Fprintf(e.stderr, "warning: %s\n", w)
	}
	for _, n := range d.Notes() {
		fmt.Fprintf(e.stderr, "note: %s\n", n)
	}
	return d, nil
}

func runReport(ctx context.Context, args []string, e env) int {
	fs := newFlagSet("report", reportSynopsis, e)
	var cf configFlags
	cf.register(fs)
	var attrs bag.Flags
	for _, f := range []struct {
		short, long string
		v           *string
		help        string
	}{
		{"s", "string_attributes", &attrs.String, "string attributes, name1=value1,name2=value2,..."},
		{"i", "int64_attributes", &attrs.Int64, "int64 attributes"},
		{"d", "double_attributes", &attrs.Double, "float64 attributes"},
		{"b", "bool_attributes", &attrs.Bool, "bool attributes"},
		{"t", "timestamp_attributes", &attrs.Timestamp, "timestamp attributes (RFC 3339)"},
		{"", "duration_attributes", &attrs.Duration, "duration attributes (Go durations: 10ms)"},
		{"", "bytes_attributes", &attrs.Bytes, "bytes attributes, name=b0:b1:b2 in hex (IP addresses: -s source.ip=10.0.0.1 works too)"},
		{"", "stringmap_attributes", &attrs.StringMap, "string map attributes, name=k1:v1;k2:v2"},
		{"a", "attributes", &attrs.Any, "attributes whose type is sensed as mixc does: int64, float64, bool, timestamp, duration, hex bytes, string map, else string"},
	} {
		fs.StringVar(f.v, f.long, "", f.help)
		if f.short != "" {
			fs.StringVar(f.v, f.short, "", "same as --"+f.long)
		}
	}
	var files listFlag
	fs.Var(&files, "attributes-file", "YAML or JSON file of attribute bags (a list of name: value mappings); one report per bag; repeatable")
	batch := fs.Int("report_batch_size", 1, "bags per report: copies of the flags' bag, or consecutive bags of the files")
	repeat := fs.Int("repeat", 1, "send everything this many times")
	fs.IntVar(repeat, "r", 1, "same as --repeat")
	quiet := fs.Bool("quiet", false, "print only the summary line, what failed (each reason once, with a count) and the adapter's drops")
	fs.BoolVar(quiet, "q", false, "same as --quiet")
	var df dropFlags
	df.register(fs)
	if err := parse(fs, args); err != nil {
		return usageCode(err, e, "report")
	}
	if *batch < 1 || *repeat < 1 {
		fmt.Fprintln(e.stderr, "mockmixer report: --report_batch_size and --repeat must be at least 1")
		return exitUsage
	}
	if attrs.Empty() == (len(files) == 0) {
		fmt.Fprintln(e.stderr, "mockmixer report: give attributes with mixc's flags (-s, -i, -a, ...) or with --attributes-file, not both and not neither")
		return exitUsage
	}
	d, err := cf.dispatcher(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "mockmixer report: %v\n", err)
		return exitUsage
	}
	defer d.Close()

	reports, err := reportBags(attrs, files, *batch, d.Manifest())
	if err != nil {
		fmt.Fprintf(e.stderr, "mockmixer report: %v\n", err)
		return exitUsage
	}
	out := e.stdout
	if *quiet {
		out = io.Discard
	}
	watch := startDropWatch(ctx, df, handlerAddresses(d), false)
	sum := summary{failures: map[string]int{}}
	for range *repeat {
		for _, bags := range reports {
			if ctx.Err() != nil {
				break
			}
			sendReport(ctx, d, bags, cf.timeout, out, &sum)
		}
	}
	if *quiet {
		// What failed stays visible: each reason once, with its count.
		for _, f := range sum.failureLines() {
			fmt.Fprintln(e.stdout, f)
		}
	}
	fmt.Fprintln(e.stdout, sum.String())
	drops := watch.finish(ctx, 10*time.Second)
	if drops != nil {
		fmt.Fprintln(e.stdout, "adapter: "+drops.String())
	}
	if sum.failed > 0 || sum.instanceErrors > 0 || ctx.Err() != nil || drops.failed(df.allowDrops) {
		return exitFailed
	}
	return exitOK
}

// handlerAddresses are the addresses of the handlers the config's rules
// call.
func handlerAddresses(d *dispatch.Dispatcher) []string {
	var out []string
	for _, r := range d.Rules() {
		for _, a := range r.Actions {
			if h := d.Handler(a.Handler.Key()); h != nil && !slices.Contains(out, h.Address) {
				out = append(out, h.Address)
			}
		}
	}
	return out
}

// reportBags groups the bags into reports.
func reportBags(attrs bag.Flags, files []string, batch int, m expr.Manifest) ([][]expr.Bag, error) {
	if len(files) == 0 {
		b, src, err := bag.FromFlags(attrs)
		if err != nil {
			return nil, err
		}
		if err := bag.Check(b, m, src); err != nil {
			return nil, err
		}
		rep := make([]expr.Bag, batch)
		for i := range rep {
			rep[i] = b
		}
		return [][]expr.Bag{rep}, nil
	}
	var all []expr.Bag
	for _, f := range files {
		bs, err := bag.ReadFile(f, m)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			all = append(all, b)
		}
	}
	var out [][]expr.Bag
	for len(all) > 0 {
		n := min(batch, len(all))
		out = append(out, all[:n])
		all = all[n:]
	}
	return out, nil
}

// summary counts what a run did, for its summary line.
type summary struct {
	reports, bags, matched, calls, failed, instances, instanceErrors int
	// failures counts each distinct failure line, for -q.
	failures     map[string]int
	failureOrder []string
}

// fail records a failure line.
func (s *summary) fail(line string) {
	if s.failures[line] == 0 {
		s.failureOrder = append(s.failureOrder, line)
	}
	s.failures[line]++
}

// failureLines are the distinct failures in the order first seen, each
// with its count when it repeated.
func (s summary) failureLines() []string {
	out := make([]string, len(s.failureOrder))
	for i, l := range s.failureOrder {
		out[i] = l
		if n := s.failures[l]; n > 1 {
			out[i] += fmt.Sprintf(" (%d times)", n)
		}
	}
	return out
}

func (s summary) String() string {
	return fmt.Sprintf("summary: %d reports, %d bags, %d matched a rule, %d calls (%d failed), %d instances sent, %d instance errors",
		s.reports, s.bags, s.matched, s.calls, s.failed, s.instances, s.instanceErrors)
}

func sendReport(ctx context.Context, d *dispatch.Dispatcher, bags []expr.Bag, timeout time.Duration, out io.Writer, sum *summary) {
	sum.reports++
	rep := d.Build(bags)
	fmt.Fprintf(out, "report %d (%d bag%s)\n", sum.reports, len(bags), plural(len(bags)))
	for i, br := range rep.Bags {
		sum.bags++
		if len(br.Matched) > 0 {
			sum.matched++
		}
		fmt.Fprintf(out, "  bag %d: matched %s; not matched %s", i+1, list(br.Matched), list(br.NotMatched))
		if len(br.OutOfScope) > 0 {
			fmt.Fprintf(out, "; out of scope %s", list(br.OutOfScope))
		}
		fmt.Fprintln(out)
		for _, err := range br.MatchErrors {
			fmt.Fprintf(out, "    match error (Mixer counts it as no match): %v\n", err)
		}
	}
	for _, err := range rep.Errors {
		sum.instanceErrors++
		line := fmt.Sprintf("instance dropped (Mixer fails the Report with it): %v", err)
		sum.fail(line)
		fmt.Fprintln(out, "  "+line)
	}
	if len(rep.Calls) == 0 {
		fmt.Fprintln(out, "  no instance for any handler: nothing sent")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, res := range d.SendAll(cctx, rep.Calls) {
		sum.calls++
		sum.instances += len(res.Call.Instances)
		h := res.Call.Handler
		fmt.Fprintf(out, "  HandleMetric -> handler %s at %s\n", h.Key(), h.Address)
		cfg := "none"
		if h.AdapterConfig != nil {
			cfg = fmt.Sprintf("%s (%d bytes)", h.AdapterConfig.TypeUrl, len(h.AdapterConfig.Value))
		}
		fmt.Fprintf(out, "    dedup_id %s, adapter_config %s, %d instance%s, %d bytes\n", res.DedupID, cfg,
			len(res.Call.Instances), plural(len(res.Call.Instances)), len(res.Request))
		for _, inst := range res.Call.Instances {
			fmt.Fprint(out, dispatch.FormatInstance(inst, "    "))
		}
		if res.Err != nil {
			sum.failed++
			st, _ := status.FromError(res.Err)
			hint := unreachableHint(res.Err, h.Address)
			sum.fail(fmt.Sprintf("HandleMetric -> handler %s at %s failed: %s: %s%s", h.Key(), h.Address, st.Code(), st.Message(), hint))
			fmt.Fprintf(out, "  <- %s: %s (%s)%s\n", st.Code(), st.Message(), res.Elapsed.Round(time.Microsecond), hint)
			continue
		}
		fmt.Fprintf(out, "  <- OK: ReportResult (%s)\n", res.Elapsed.Round(time.Microsecond))
	}
}

func list(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(keys, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// unreachableHint explains an Unavailable call to an address whose host does
// not resolve: the handler names an in-cluster service (as the samples do),
// which a local run reaches with --address. Without it, gRPC only says "no
// children to pick from".
func unreachableHint(err error, address string) string {
	if status.Code(err) != codes.Unavailable {
		return ""
	}
	host, _, splitErr := net.SplitHostPort(address)
	if splitErr != nil || net.ParseIP(host) != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, lookupErr := net.DefaultResolver.LookupHost(ctx, host); lookupErr == nil {
		return ""
	}
	return fmt.Sprintf("\n     host %q does not resolve here: the handler's connection.address names an in-cluster service;"+
		" pass --address 127.0.0.1:50000 (or wherever the adapter listens) to send to a local adapter", host)
}
