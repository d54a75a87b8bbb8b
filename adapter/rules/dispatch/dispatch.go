// Package dispatch turns attribute bags into HandleMetric calls and sends them, as Mixer does
// for one Report: rule scope and match, instance building, one call per handler.
package dispatch

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
)

// Options configure a Dispatcher. The zero value behaves like Mixer.
type Options struct {
	// DefaultNamespace is Mixer's --configDefaultNamespace, whose rules see every request
	// (default istio-system).
	DefaultNamespace string
	// Address, when set, replaces every handler's connection.address (local runs of config
	// written for a cluster).
	Address string
	// BypassSANVerification is BYPASS_OOP_MTLS_SAN_VERIFICATION.
	BypassSANVerification bool
	// SystemRoots replaces conn.SystemRoots.
	SystemRoots string
	// DialOptions are added to every connection.
	DialOptions []grpc.DialOption
	// Seed makes map shuffles and dedup_id seeds reproducible; zero means random, as Mixer's.
	Seed uint64
	// DedupSeed, when set, gives the first dedup_id of each handler (by key).
	DedupSeed func(handlerKey string) uint64
	// RacyDedup reproduces Mixer 1.7's dedup_id race (encode.NewRacyDedup): calls sent at
	// the same moment may share an id. Off, every call gets its own.
	RacyDedup bool
	// InProcess, when set, names the handlers the caller serves itself (the running
	// adapter's own handlers): they are not prepared for sending, so they need no address.
	InProcess func(*crd.ResolvedAction) bool
}

// Handler is a dynamic handler ready to be called.
type Handler struct {
	*crd.Handler
	Adapter *crd.Adapter
	// Address is where calls go: the handler's address or Options.Address.
	Address string
	// AdapterConfig is sent with every call; nil for session_based adapters and adapters
	// whose CR has no config.
	AdapterConfig *types.Any
	// Timeout is connection.timeout; zero leaves only the caller's deadline.
	Timeout time.Duration

	dedup *encode.Dedup
	opts  conn.Options
	mu    sync.Mutex
	cc    *grpc.ClientConn
}

func (h *Handler) conn() (*grpc.ClientConn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cc == nil {
		cc, err := conn.Dial(h.opts)
		if err != nil {
			return nil, fmt.Errorf("handler %s: %w", h.Key(), err)
		}
		h.cc = cc
	}
	return h.cc, nil
}

// Invoke sends an encoded HandleMetricRequest (see Dispatcher.Encode) to the handler,
// within its connection.timeout when it has one.
func (h *Handler) Invoke(ctx context.Context, req []byte) error {
	cc, err := h.conn()
	if err != nil {
		return err
	}
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	raw := conn.Raw(req)
	return cc.Invoke(ctx, encode.Path, &raw, &modelpb.ReportResult{})
}

// Dispatcher holds resolved config and one connection per handler.
type Dispatcher struct {
	opts     Options
	manifest expr.Manifest
	rules    []*crd.ResolvedRule
	handlers map[string]*Handler
	warnings []string
	notes    []string

	mu  sync.Mutex
	rnd *rand.Rand
}

// New resolves the config the way Mixer does and prepares every dynamic handler a rule uses:
// its adapter's params encoded against the adapter's descriptor in sorted-key order, its
// address and authentication. Any problem (an unknown attribute, a type error, a missing
// handler, instance, adapter or template, params the descriptor refuses) is an error here,
// where Mixer would log it and drop the part that fails.
func New(store *crd.Store, o Options) (*Dispatcher, error) {
	if o.DefaultNamespace == "" {
		o.DefaultNamespace = crd.DefaultConfigNamespace
	}
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	d := &Dispatcher{opts: o, handlers: map[string]*Handler{}, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	manifest, err := store.Manifest()
	if err != nil {
		return nil, err
	}
	d.manifest = manifest
	if d.rules, err = store.ResolveRules(); err != nil {
		return nil, err
	}
	paths := map[string]error{}
	var errs []error
	for _, r := range d.rules {
		d.warn(r.Meta, "match", r.Match)
		for _, a := range r.Actions {
			if a.Adapter == nil {
				d.notes = append(d.notes, fmt.Sprintf("rule %s: handler %s is compiled into Mixer (compiledAdapter: %s); mockmixer skips it",
					r.Key(), a.Handler.Key(), a.Handler.CompiledAdapter))
				continue
			}
			if o.InProcess == nil || !o.InProcess(a) {
				if _, err := d.handler(a); err != nil {
					errs = append(errs, err)
				}
			}
			for _, ri := range a.Instances {
				if err := templateCheck(ri, paths); err != nil {
					errs = append(errs, err)
				}
				d.warnInstance(ri)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(d.warnings)
	d.warnings = slices.Compact(d.warnings)
	return d, nil
}

func (d *Dispatcher) warn(m crd.Meta, what string, e *expr.Expr) {
	if e == nil {
		return
	}
	for _, w := range e.Warnings() {
		d.warnings = append(d.warnings, fmt.Sprintf("%s %s (%s): %s: %s", m.Kind, m.Key(), m.Source(), what, w))
	}
}

func (d *Dispatcher) warnInstance(ri *crd.ResolvedInstance) {
	d.warn(ri.Meta, "value", ri.Value)
	d.warn(ri.Meta, "monitored_resource_type", ri.MonitoredResourceType)
	for _, k := range sortedKeys(ri.Dimensions) {
		d.warn(ri.Meta, "dimensions."+k, ri.Dimensions[k])
	}
	for _, k := range sortedKeys(ri.MonitoredResourceDimensions) {
		d.warn(ri.Meta, "monitored_resource_dimensions."+k, ri.MonitoredResourceDimensions[k])
	}
}

func (d *Dispatcher) handler(a *crd.ResolvedAction) (*Handler, error) {
	h := a.Handler
	if got, ok := d.handlers[h.Key()]; ok {
		return got, nil
	}
	out := &Handler{Handler: h, Adapter: a.Adapter}
	if h.Connection != nil {
		out.Address, out.Timeout = h.Connection.Address, h.Connection.Timeout
	}
	if d.opts.Address != "" {
		out.Address = d.opts.Address
	}
	if out.Address == "" {
		return nil, fmt.Errorf("handler %s (%s): empty connection address (set spec.connection.address, or --address)", h.Key(), h.Source())
	}
	if !a.Adapter.SessionBased {
		schema, err := params.ParseSchema(a.Adapter.Config)
		if err != nil {
			return nil, fmt.Errorf("adapter %s (%s): %w", a.Adapter.Key(), a.Adapter.Source(), err)
		}
		if schema != nil {
			if out.AdapterConfig, err = schema.AdapterConfig(h.Params); err != nil {
				return nil, fmt.Errorf("handler %s (%s): params do not fit adapter %s: %w", h.Key(), h.Source(), a.Adapter.Key(), err)
			}
		}
	}
	seed := d.rnd.Uint64() // random unless Options.Seed fixes it
	if d.opts.DedupSeed != nil {
		seed = d.opts.DedupSeed(h.Key())
	}
	out.dedup = encode.NewDedup(seed)
	if d.opts.RacyDedup {
		out.dedup = encode.NewRacyDedup(seed)
	}
	out.opts = conn.Options{Address: out.Address, BypassSANVerification: d.opts.BypassSANVerification,
		SystemRoots: d.opts.SystemRoots, DialOptions: d.opts.DialOptions}
	if h.Connection != nil {
		out.opts.Auth = h.Connection.Authentication
	}
	d.handlers[h.Key()] = out
	return out, nil
}

// templateCheck makes sure an instance's template is the metric template, the only one whose
// instances mockmixer encodes. The gRPC path comes from the template's descriptor as Mixer
// derives it (dynamic/handler.go, RemoteAdapterSvc).
func templateCheck(ri *crd.ResolvedInstance, paths map[string]error) error {
	key := ri.Template.Key()
	err, seen := paths[key]
	if !seen {
		var path string
		if path, err = GRPCPath(ri.Template.Descriptor); err == nil && path != encode.Path {
			err = fmt.Errorf("template %s serves %s; mockmixer sends instances of the metric template (%s) only", key, path, encode.Path)
		} else if err != nil {
			err = fmt.Errorf("template %s (%s): %w", key, ri.Template.Source(), err)
		}
		paths[key] = err
	}
	if err == nil && ri.Params == nil {
		return fmt.Errorf("instance %s (%s): template reference %q does not name the metric template, so its params cannot be read",
			ri.Key(), ri.Source(), ri.Instance.Template)
	}
	return err
}

// GRPCPath reads a template CR's descriptor (base64 FileDescriptorSet) and returns the path
// Mixer calls: the first service whose name starts with Handle, its first method.
func GRPCPath(descriptorB64 string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(descriptorB64)
	if err != nil {
		return "", fmt.Errorf("descriptor is not standard base64: %w", err)
	}
	var fds descriptor.FileDescriptorSet
	if err := proto.Unmarshal(raw, &fds); err != nil {
		return "", fmt.Errorf("descriptor is not a FileDescriptorSet: %w", err)
	}
	for _, f := range fds.GetFile() {
		for _, s := range f.GetService() {
			if strings.HasPrefix(s.GetName(), "Handle") && len(s.GetMethod()) > 0 {
				return fmt.Sprintf("/%s.%s/%s", f.GetPackage(), s.GetName(), s.GetMethod()[0].GetName()), nil
			}
		}
	}
	return "", errors.New("descriptor has no service named Handle*")
}

// Manifest is the merged attribute manifest.
func (d *Dispatcher) Manifest() expr.Manifest { return d.manifest }

// Rules are the resolved rules, sorted by key.
func (d *Dispatcher) Rules() []*crd.ResolvedRule { return d.rules }

// Handler returns a prepared dynamic handler by key, or nil.
func (d *Dispatcher) Handler(key string) *Handler { return d.handlers[key] }

// Warnings are the expression forms a real Mixer rejects (see expr.Expr.Warnings), each
// with the resource and file:line it comes from.
func (d *Dispatcher) Warnings() []string { return slices.Clone(d.warnings) }

// Notes say what is in the config but not dispatched (handlers compiled into Mixer).
func (d *Dispatcher) Notes() []string { return slices.Clone(d.notes) }

// Close closes every connection.
func (d *Dispatcher) Close() error {
	var errs []error
	for _, h := range d.handlers {
		h.mu.Lock()
		if h.cc != nil {
			errs = append(errs, h.cc.Close())
			h.cc = nil
		}
		h.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Report is what one Mixer Report produces.
type Report struct {
	// Bags says, per attribute bag, what each rule made of it.
	Bags []BagResult
	// Calls are the HandleMetric calls to make, one per handler, in the order the handlers
	// were first reached.
	Calls []*Call
	// Errors are instances that could not be built (an attribute missing without a `|`
	// default, an expression failing). Mixer drops such an instance and fails the proxy's
	// Report with them, while still sending the rest.
	Errors []error
}

// BagResult is the outcome of one bag.
type BagResult struct {
	// Matched, NotMatched and OutOfScope list rule keys. A rule is out of scope when it is
	// outside the default namespace and the request's identity namespace is another one.
	Matched, NotMatched, OutOfScope []string
	// MatchErrors are match conditions that failed to evaluate; Mixer treats them as no
	// match and logs them.
	MatchErrors []error
}

// Call is one HandleMetric call.
type Call struct {
	Handler   *Handler
	Instances []*encode.Instance
}

// Build evaluates bags as one Report: each bag against each rule in scope, each matching
// rule's instances built from the bag and queued for the rule's handlers, then one call per
// handler (routing/table.go, dispatcher/reporter.go).
func (d *Dispatcher) Build(bags []expr.Bag) *Report {
	rep := &Report{}
	byHandler := map[string]*Call{}
	for _, bag := range bags {
		var br BagResult
		for _, r := range d.rules {
			if !r.InScope(bag, d.opts.DefaultNamespace) {
				br.OutOfScope = append(br.OutOfScope, r.Key())
				continue
			}
			ok, err := r.Matches(bag)
			if err != nil {
				br.MatchErrors = append(br.MatchErrors, fmt.Errorf("rule %s: match %q: %w", r.Key(), r.Match.String(), err))
			}
			if !ok {
				br.NotMatched = append(br.NotMatched, r.Key())
				continue
			}
			br.Matched = append(br.Matched, r.Key())
			for _, a := range r.Actions {
				if a.Adapter == nil {
					continue
				}
				h := d.handlers[a.Handler.Key()]
				if h == nil {
					continue // served in process (Options.InProcess)
				}
				for _, ri := range a.Instances {
					inst, err := BuildInstance(ri, bag)
					if err != nil {
						rep.Errors = append(rep.Errors, err)
						continue
					}
					c := byHandler[h.Key()]
					if c == nil {
						c = &Call{Handler: h}
						byHandler[h.Key()] = c
						rep.Calls = append(rep.Calls, c)
					}
					c.Instances = append(c.Instances, inst)
				}
			}
		}
		rep.Bags = append(rep.Bags, br)
	}
	return rep
}

// BuildInstance evaluates a metric instance's params against a bag (dynamic/builder.go):
// the instance is named <name>.instance.<namespace> and each param becomes the Value member
// its type picks. Dimensions come out sorted by key; Send shuffles them.
func BuildInstance(ri *crd.ResolvedInstance, bag expr.Bag) (*encode.Instance, error) {
	inst := &encode.Instance{Name: ri.Key()}
	fail := func(field string, err error) error {
		return fmt.Errorf("instance %s: %s: %w", ri.Key(), field, err)
	}
	var err error
	if ri.Value != nil {
		if inst.Value, err = evalValue(ri.Value, bag); err != nil {
			return nil, fail("value", err)
		}
	}
	if inst.Dimensions, err = evalDims(ri.Dimensions, bag); err != nil {
		return nil, fail("dimensions", err)
	}
	if ri.MonitoredResourceType != nil {
		v, err := ri.MonitoredResourceType.Eval(bag)
		if err != nil {
			return nil, fail("monitored_resource_type", err)
		}
		s := v.(string)
		inst.MonitoredResourceType = &s
	}
	if inst.MonitoredResourceDimensions, err = evalDims(ri.MonitoredResourceDimensions, bag); err != nil {
		return nil, fail("monitored_resource_dimensions", err)
	}
	return inst, nil
}

func evalDims(exprs map[string]*expr.Expr, bag expr.Bag) ([]encode.Dim, error) {
	var out []encode.Dim
	for _, k := range sortedKeys(exprs) {
		v, err := evalValue(exprs[k], bag)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, encode.Dim{Key: k, Value: v})
	}
	return out, nil
}

func evalValue(e *expr.Expr, bag expr.Bag) (*policypb.Value, error) {
	v, err := e.Eval(bag)
	if err != nil {
		return nil, err
	}
	return ToValue(v, e.Type())
}

// ToValue wraps an evaluated expression in the Value member its type picks
// (dynamic/valueTypeEncoder.go).
func ToValue(v any, t expr.ValueType) (*policypb.Value, error) {
	switch t {
	case expr.String:
		return &policypb.Value{Value: &policypb.Value_StringValue{StringValue: v.(string)}}, nil
	case expr.Int64:
		return &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: v.(int64)}}, nil
	case expr.Double:
		return &policypb.Value{Value: &policypb.Value_DoubleValue{DoubleValue: v.(float64)}}, nil
	case expr.Bool:
		return &policypb.Value{Value: &policypb.Value_BoolValue{BoolValue: v.(bool)}}, nil
	case expr.Timestamp:
		ts, err := types.TimestampProto(v.(time.Time))
		if err != nil {
			return nil, fmt.Errorf("invalid timestamp: %w", err)
		}
		return &policypb.Value{Value: &policypb.Value_TimestampValue{TimestampValue: &policypb.TimeStamp{Value: ts}}}, nil
	case expr.Duration:
		return &policypb.Value{Value: &policypb.Value_DurationValue{DurationValue: &policypb.Duration{Value: types.DurationProto(v.(time.Duration))}}}, nil
	case expr.IPAddress:
		// The bytes as they are: 4 for an IPv4 attribute from a proxy, 16 from ip("1.2.3.4").
		var b []byte
		switch x := v.(type) {
		case net.IP:
			b = x
		case []byte:
			b = x
		}
		return &policypb.Value{Value: &policypb.Value_IpAddressValue{IpAddressValue: &policypb.IPAddress{Value: b}}}, nil
	case expr.EmailAddress:
		return &policypb.Value{Value: &policypb.Value_EmailAddressValue{EmailAddressValue: &policypb.EmailAddress{Value: v.(string)}}}, nil
	case expr.DNSName:
		return &policypb.Value{Value: &policypb.Value_DnsNameValue{DnsNameValue: &policypb.DNSName{Value: v.(string)}}}, nil
	case expr.URI:
		return &policypb.Value{Value: &policypb.Value_UriValue{UriValue: &policypb.Uri{Value: v.(string)}}}, nil
	}
	return nil, fmt.Errorf("unsupported type: %s", t)
}

// Result is the outcome of one call.
type Result struct {
	Call    *Call
	DedupID string
	// Request is the encoded HandleMetricRequest as sent.
	Request []byte
	Err     error
	Elapsed time.Duration
}

// Send encodes a call as Mixer does (map entries shuffled, the handler's next dedup_id) and
// makes it, within the handler's connection.timeout when it has one.
func (d *Dispatcher) Send(ctx context.Context, c *Call) *Result {
	res := &Result{Call: c}
	res.DedupID, res.Request, res.Err = d.Encode(c)
	if res.Err != nil {
		return res
	}
	cc, err := c.Handler.conn()
	if err != nil {
		res.Err = err
		return res
	}
	if c.Handler.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Handler.Timeout)
		defer cancel()
	}
	start := time.Now()
	req := conn.Raw(res.Request)
	res.Err = cc.Invoke(ctx, encode.Path, &req, &modelpb.ReportResult{})
	res.Elapsed = time.Since(start)
	return res
}

// Encode encodes a call as Send would send it, taking the handler's next dedup_id.
func (d *Dispatcher) Encode(c *Call) (dedupID string, req []byte, err error) {
	d.mu.Lock()
	for _, inst := range c.Instances {
		encode.Shuffle(inst, d.rnd)
	}
	d.mu.Unlock()
	dedupID = c.Handler.dedup.Next()
	req, err = encode.Request(c.Instances, c.Handler.AdapterConfig, dedupID)
	return dedupID, req, err
}

// SendAll makes the calls of one Report in parallel, one goroutine per handler, as Mixer's
// dispatcher does; results come back in the order of calls.
func (d *Dispatcher) SendAll(ctx context.Context, calls []*Call) []*Result {
	out := make([]*Result, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = d.Send(ctx, c)
		}()
	}
	wg.Wait()
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
