package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gogo/protobuf/types"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/dispatch"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
)

const sendSynopsis = `Sends one HandleMetric with the instances of a YAML or JSON file, laid out as Mixer lays
them out. The adapter_config comes from a handler (--handler, from the -f config, which also
gives the address, timeout and authentication) or from a params file (--params) encoded
against an adapter CR of the -f config.

Instances file:
  instances:
  - name: analyticcounter.instance.istio-system   # fully qualified, as Mixer names it
    value: 1                 # sensed: integer -> int64, other number -> double, bool, else string
    dimensions:
      request_path: /v1/damage
      response_code: {int64: 200}    # or state the type: string, int64, double, bool,
      latency: {duration: 12ms}      # timestamp, duration, ip_address, dns_name,
                                     # email_address, uri, string_map
    monitored_resource_type: UNSPECIFIED

Example:
  mockmixer send -f deploy/kubernetes/adapter.yaml -f deploy/kubernetes/samples/analyticprom-prometheus.yaml \
    --handler analyticprom-prometheus --address 127.0.0.1:50000 --instances my-instances.yaml`

func runSend(ctx context.Context, args []string, e env) int {
	fs := newFlagSet("send", sendSynopsis, e)
	var cf configFlags
	cf.register(fs)
	instFile := fs.String("instances", "", "YAML or JSON file of instances (required)")
	handlerName := fs.String("handler", "", "handler of the -f config giving adapter_config, address, timeout and authentication (default: the only one)")
	paramsFile := fs.String("params", "", "YAML file of handler params, encoded instead of the handler's")
	adapterName := fs.String("adapter", "", "adapter CR of the -f config that --params are encoded for (default: the only one)")
	noConfig := fs.Bool("no-adapter-config", false, "send no adapter_config, as for a session_based adapter")
	dedupID := fs.String("dedup-id", "", "dedup_id to send (default: a random decimal, as Mixer's first call)")
	if err := parse(fs, args); err != nil {
		return usageCode(err, e, "send")
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(e.stderr, "mockmixer send: %v\n", err)
		return code
	}
	if *instFile == "" {
		return fail(exitUsage, errors.New("--instances is required"))
	}
	data, err := os.ReadFile(*instFile)
	if err != nil {
		return fail(exitUsage, err)
	}
	instances, err := parseInstances(*instFile, data)
	if err != nil {
		return fail(exitUsage, err)
	}
	target, err := sendTarget(cf, *handlerName, *paramsFile, *adapterName, *noConfig, e)
	if err != nil {
		return fail(exitUsage, err)
	}
	if *dedupID == "" {
		*dedupID = strconv.FormatUint(rand.Uint64(), 10)
	}
	req, err := encode.Request(instances, target.cfg, *dedupID)
	if err != nil {
		return fail(exitUsage, err)
	}
	cc, err := conn.Dial(target.conn)
	if err != nil {
		return fail(exitUsage, err)
	}
	defer cc.Close()

	out := e.stdout
	fmt.Fprintf(out, "HandleMetric -> %s\n", target.conn.Address)
	cfgText := "none"
	if target.cfg != nil {
		cfgText = fmt.Sprintf("%s (%d bytes)", target.cfg.TypeUrl, len(target.cfg.Value))
	}
	fmt.Fprintf(out, "  dedup_id %s, adapter_config %s, %d instance%s, %d bytes\n", *dedupID, cfgText, len(instances), plural(len(instances)), len(req))
	for _, inst := range instances {
		fmt.Fprint(out, dispatch.FormatInstance(inst, "  "))
	}
	cctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	if target.timeout > 0 {
		var c2 context.CancelFunc
		cctx, c2 = context.WithTimeout(cctx, target.timeout)
		defer c2()
	}
	start := time.Now()
	raw := conn.Raw(req)
	err = cc.Invoke(cctx, encode.Path, &raw, &modelpb.ReportResult{})
	took := time.Since(start).Round(time.Microsecond)
	if err != nil {
		st, _ := status.FromError(err)
		fmt.Fprintf(out, "<- %s: %s (%s)%s\n", st.Code(), st.Message(), took, unreachableHint(err, target.conn.Address))
		return exitFailed
	}
	fmt.Fprintf(out, "<- OK: ReportResult (%s)\n", took)
	return exitOK
}

type target struct {
	conn    conn.Options
	cfg     *types.Any
	timeout time.Duration
}

// sendTarget works out where to send and which adapter_config to send.
func sendTarget(cf configFlags, handlerName, paramsFile, adapterName string, noConfig bool, e env) (*target, error) {
	t := &target{conn: conn.Options{Address: cf.address, BypassSANVerification: conn.BypassFromEnv(e.getenv)}}
	var store *crd.Store
	if len(cf.config) > 0 {
		var err error
		if store, err = crd.Load(cf.config...); err != nil {
			return nil, err
		}
	}
	switch {
	case paramsFile != "":
		if store == nil {
			return nil, errors.New("--params needs the adapter CR: pass it with -f")
		}
		adapter, err := pick(store.Adapters(), adapterName, "adapter")
		if err != nil {
			return nil, err
		}
		schema, err := params.ParseSchema(adapter.Config)
		if err != nil {
			return nil, fmt.Errorf("adapter %s: %w", adapter.Key(), err)
		}
		if schema == nil {
			return nil, fmt.Errorf("adapter %s has no config descriptor, so it takes no params", adapter.Key())
		}
		p, err := readParams(paramsFile)
		if err != nil {
			return nil, err
		}
		if t.cfg, err = schema.AdapterConfig(p); err != nil {
			return nil, fmt.Errorf("%s: %w", paramsFile, err)
		}
	case store != nil && (handlerName != "" || len(dynamicHandlers(store)) > 0):
		h, err := pick(dynamicHandlers(store), handlerName, "handler")
		if err != nil {
			return nil, err
		}
		adapter, err := adapterOf(store, h)
		if err != nil {
			return nil, err
		}
		if h.Connection != nil {
			t.conn.Auth = h.Connection.Authentication
			t.timeout = h.Connection.Timeout
			if t.conn.Address == "" {
				t.conn.Address = h.Connection.Address
			}
		}
		if !adapter.SessionBased {
			schema, err := params.ParseSchema(adapter.Config)
			if err != nil {
				return nil, fmt.Errorf("adapter %s: %w", adapter.Key(), err)
			}
			if schema != nil {
				if t.cfg, err = schema.AdapterConfig(h.Params); err != nil {
					return nil, fmt.Errorf("handler %s (%s): %w", h.Key(), h.Source(), err)
				}
			}
		}
	case !noConfig:
		return nil, errors.New("no adapter_config: name a handler (-f config --handler NAME), or params (--params FILE -f adapter.yaml), or pass --no-adapter-config")
	}
	if noConfig {
		t.cfg = nil
	}
	if t.conn.Address == "" {
		return nil, errors.New("no address: pass --address, or a handler with connection.address")
	}
	return t, nil
}

// adapterOf resolves a handler's adapter by Mixer's naming rules. Unlike report, send needs
// no template, so the adapter's templates need not be in the config.
func adapterOf(s *crd.Store, h *crd.Handler) (*crd.Adapter, error) {
	for _, key := range crd.Candidates(h.Adapter, crd.KindAdapter, h.Namespace) {
		for _, a := range s.Adapters() {
			if a.Key() == key {
				return a, nil
			}
		}
	}
	return nil, fmt.Errorf("handler %s (%s): adapter %q not found in the config (pass its CR with -f)", h.Key(), h.Source(), h.Adapter)
}

func dynamicHandlers(s *crd.Store) []*crd.Handler {
	return slices.DeleteFunc(s.Handlers(), (*crd.Handler).Static)
}

// pick finds a resource by name (short, name.namespace, or its full key), or the only one
// when name is empty.
func pick[T interface{ Key() string }](items []T, name, kind string) (T, error) {
	var zero T
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.Key()
	}
	if name == "" {
		if len(items) == 1 {
			return items[0], nil
		}
		return zero, fmt.Errorf("the config has %d %ss %v: name one with --%s", len(items), kind, keys, kind)
	}
	var found []T
	for _, it := range items {
		if nameMatches(it.Key(), name, kind) {
			found = append(found, it)
		}
	}
	switch len(found) {
	case 0:
		return zero, fmt.Errorf("no %s %q in the config (it has %v)", kind, name, keys)
	case 1:
		return found[0], nil
	}
	return zero, fmt.Errorf("%s %q is ambiguous: give name.namespace", kind, name)
}

func nameMatches(key, name, kind string) bool {
	if key == name || strings.HasPrefix(key, name+"."+kind+".") {
		return true
	}
	short, ns, ok := strings.Cut(name, ".")
	return ok && key == short+"."+kind+"."+ns
}

func readParams(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("%s: invalid YAML: %w", path, err)
	}
	if len(n.Content) == 0 {
		return map[string]any{}, nil
	}
	v, err := structValue(n.Content[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: params must be a mapping", path)
	}
	return m, nil
}

// structValue reads YAML as a google.protobuf.Struct holds it: numbers are float64.
func structValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.AliasNode:
		return structValue(n.Alias)
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := structValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out[n.Content[i].Value] = v
		}
		return out, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := structValue(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	switch n.Tag {
	case "!!null":
		return nil, nil
	case "!!bool":
		return n.Value == "true", nil
	case "!!int", "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return f, nil
	}
	return n.Value, nil
}

// parseInstances reads a send file: `instances: [...]` or a bare list.
func parseInstances(name string, data []byte) ([]*encode.Instance, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no instances", name)
		}
		return nil, fmt.Errorf("%s: invalid YAML: %w", name, err)
	}
	root := doc.Content[0]
	if root.Kind == yaml.MappingNode {
		var list *yaml.Node
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == "instances" {
				list = root.Content[i+1]
			} else {
				return nil, fmt.Errorf("%s:%d: unknown key %q (want instances)", name, root.Content[i].Line, root.Content[i].Value)
			}
		}
		if list == nil {
			return nil, fmt.Errorf("%s: no instances", name)
		}
		root = list
	}
	if root.Kind != yaml.SequenceNode || len(root.Content) == 0 {
		return nil, fmt.Errorf("%s:%d: want a list of instances", name, root.Line)
	}
	var out []*encode.Instance
	var errs []error
	for _, n := range root.Content {
		inst, err := parseInstance(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%w", name, err))
			continue
		}
		out = append(out, inst)
	}
	return out, errors.Join(errs...)
}

func parseInstance(n *yaml.Node) (*encode.Instance, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%d: an instance must be a mapping", n.Line)
	}
	inst := &encode.Instance{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "name":
			inst.Name = v.Value
		case "value":
			inst.Value, err = parseValue(v)
		case "dimensions":
			inst.Dimensions, err = parseDims(v)
		case "monitored_resource_type":
			s := v.Value
			inst.MonitoredResourceType = &s
		case "monitored_resource_dimensions":
			inst.MonitoredResourceDimensions, err = parseDims(v)
		default:
			err = fmt.Errorf("unknown key %q (want name, value, dimensions, monitored_resource_type, monitored_resource_dimensions)", k.Value)
		}
		if err != nil {
			return nil, fmt.Errorf("%d: %s: %w", k.Line, k.Value, err)
		}
	}
	if inst.Name == "" {
		return nil, fmt.Errorf("%d: an instance needs a name (<name>.instance.<namespace>)", n.Line)
	}
	return inst, nil
}

func parseDims(n *yaml.Node) ([]encode.Dim, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping")
	}
	var out []encode.Dim
	for i := 0; i+1 < len(n.Content); i += 2 {
		v, err := parseValue(n.Content[i+1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Content[i].Value, err)
		}
		out = append(out, encode.Dim{Key: n.Content[i].Value, Value: v})
	}
	return out, nil
}

// parseValue reads a Value: a scalar whose type is sensed, or {type: value}.
func parseValue(n *yaml.Node) (*policypb.Value, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int":
			i, err := strconv.ParseInt(n.Value, 0, 64)
			if err != nil {
				return nil, err
			}
			return &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: i}}, nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, err
			}
			return &policypb.Value{Value: &policypb.Value_DoubleValue{DoubleValue: f}}, nil
		case "!!bool":
			return &policypb.Value{Value: &policypb.Value_BoolValue{BoolValue: n.Value == "true"}}, nil
		case "!!null":
			return nil, errors.New("want a value, got null")
		}
		return &policypb.Value{Value: &policypb.Value_StringValue{StringValue: n.Value}}, nil
	case yaml.MappingNode:
		if len(n.Content) != 2 {
			return nil, errors.New("state one type: {int64: 200}")
		}
		return typedValue(n.Content[0].Value, n.Content[1])
	}
	return nil, errors.New("want a scalar or {type: value}")
}

func typedValue(typ string, n *yaml.Node) (*policypb.Value, error) {
	s := n.Value
	switch typ {
	case "string":
		return &policypb.Value{Value: &policypb.Value_StringValue{StringValue: s}}, nil
	case "int64":
		i, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return nil, err
		}
		return &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: i}}, nil
	case "double":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, err
		}
		return &policypb.Value{Value: &policypb.Value_DoubleValue{DoubleValue: f}}, nil
	case "bool":
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, err
		}
		return &policypb.Value{Value: &policypb.Value_BoolValue{BoolValue: b}}, nil
	case "timestamp":
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, err
		}
		ts, err := types.TimestampProto(t)
		if err != nil {
			return nil, err
		}
		return &policypb.Value{Value: &policypb.Value_TimestampValue{TimestampValue: &policypb.TimeStamp{Value: ts}}}, nil
	case "duration":
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, err
		}
		return &policypb.Value{Value: &policypb.Value_DurationValue{DurationValue: &policypb.Duration{Value: types.DurationProto(d)}}}, nil
	case "ip_address":
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("%q is not an IP address", s)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		return &policypb.Value{Value: &policypb.Value_IpAddressValue{IpAddressValue: &policypb.IPAddress{Value: ip}}}, nil
	case "dns_name":
		return &policypb.Value{Value: &policypb.Value_DnsNameValue{DnsNameValue: &policypb.DNSName{Value: s}}}, nil
	case "email_address":
		return &policypb.Value{Value: &policypb.Value_EmailAddressValue{EmailAddressValue: &policypb.EmailAddress{Value: s}}}, nil
	case "uri":
		return &policypb.Value{Value: &policypb.Value_UriValue{UriValue: &policypb.Uri{Value: s}}}, nil
	case "string_map":
		if n.Kind != yaml.MappingNode {
			return nil, errors.New("string_map wants a mapping")
		}
		m := map[string]string{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = n.Content[i+1].Value
		}
		return &policypb.Value{Value: &policypb.Value_StringMapValue{StringMapValue: &policypb.StringMap{Value: m}}}, nil
	}
	return nil, fmt.Errorf("unknown type %q (want string, int64, double, bool, timestamp, duration, ip_address, dns_name, email_address, uri, string_map)", typ)
}
