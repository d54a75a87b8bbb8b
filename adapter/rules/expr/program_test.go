package expr

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// recordOf copies a MapBag into a Record laid out by l. It reports false
// when a value does not have its attribute's Go type: a Record is typed, so
// the interpreter's conversion errors cannot happen with one.
func recordOf(l *Layout, b MapBag) (*Record, bool) {
	r := NewRecord(l)
	for name, raw := range b {
		slot, ok := l.Slot(name)
		if !ok {
			return nil, false
		}
		v, err := fromBag(raw, l.Type(slot))
		if err != nil {
			return nil, false
		}
		switch x := v.(type) {
		case string:
			r.SetString(slot, x)
		case int64:
			r.SetInt(slot, x)
		case time.Duration:
			r.SetDuration(slot, x)
		case float64:
			r.SetFloat(slot, x)
		case bool:
			r.SetBool(slot, x)
		case time.Time:
			r.SetTime(slot, x.Unix(), int64(x.Nanosecond()))
		case net.IP:
			r.SetIP(slot, x)
		case map[string]string:
			m := r.MapSlot(slot)
			for k, v := range x {
				*m = append(*m, KV{Key: k, Value: v})
			}
		default:
			return nil, false
		}
	}
	return r, true
}

// sameResult fails unless the program and the interpreter agree: the same
// error text, or values equal for their type.
func sameResult(t *testing.T, src string, e *Expr, b MapBag) {
	t.Helper()
	l := NewLayout(manifest())
	r, ok := recordOf(l, b)
	if !ok {
		return
	}
	p, err := e.Program(l)
	require.NoError(t, err, src)
	want, wantErr := e.Eval(b)
	got, gotErr := p.Eval(r)
	// The generic tree of closures, which the fast paths bypass, is held
	// to the interpreter too.
	generic, _, genericErr := p.root(r, false)
	if wantErr != nil || gotErr != nil || genericErr != nil {
		require.Error(t, gotErr, "%s: interpreter failed with %v, program did not", src, wantErr)
		require.Error(t, wantErr, "%s: program failed with %v, interpreter did not", src, gotErr)
		require.Equal(t, wantErr.Error(), gotErr.Error(), src)
		require.EqualError(t, genericErr, wantErr.Error(), "%s: generic path", src)
		switch p.Type() {
		case String:
			_, err := p.EvalString(r)
			require.EqualError(t, err, wantErr.Error(), "%s: EvalString", src)
		case Bool:
			_, err := p.EvalBool(r)
			require.EqualError(t, err, wantErr.Error(), "%s: EvalBool", src)
		case Int64:
			_, err := p.EvalInt(r)
			require.EqualError(t, err, wantErr.Error(), "%s: EvalInt", src)
		}
		return
	}
	gv := got.Interface(p.Type())
	switch p.Type() {
	case String:
		s, err := p.EvalString(r)
		require.NoError(t, err, src)
		require.Equal(t, want, s, "%s: EvalString", src)
	case Bool:
		v, err := p.EvalBool(r)
		require.NoError(t, err, src)
		require.Equal(t, want, v, "%s: EvalBool", src)
	case Int64:
		v, err := p.EvalInt(r)
		require.NoError(t, err, src)
		require.Equal(t, want, v, "%s: EvalInt", src)
	}
	if p.Type() != Timestamp && p.Type() != IPAddress && p.Type() != Double && p.Type() != StringMap {
		require.Equal(t, want, generic.Interface(p.Type()), "%s: generic path", src)
	}
	switch w := want.(type) {
	case time.Time:
		require.True(t, w.Equal(gv.(time.Time)), "%s: %v != %v", src, w, gv)
	case net.IP:
		// The bytes, not net.IP.Equal: 4 and 16-byte forms must not mix.
		require.Equal(t, string(w), string(gv.(net.IP)), src)
	case float64:
		if w != w { // NaN
			require.True(t, gv.(float64) != gv.(float64), src)
			return
		}
		require.Equal(t, want, gv, src)
	default:
		require.Equal(t, want, gv, src)
	}
}

// bags are the bags every corpus expression is evaluated against.
func bags() []MapBag {
	partial := bag()
	delete(partial, "request.size")
	delete(partial, "connection.mtls")
	return []MapBag{bag(), {}, partial,
		{"request.headers": map[string]string{}, "request.path": "user-agent"},
		{"connection.mtls": false, "request.size": int64(0), "response.code": int64(503), "request.path": ""},
		// The attributes of Istio's standard config, every way round.
		{"context.protocol": "http", "request.useragent": "curl/8", "context.reporter.kind": "inbound", "connection.mtls": true,
			"destination.service.name": "reviews", "request.host": "reviews:9080", "api": "a"},
		{"context.protocol": "grpc", "request.useragent": "kube-probe/1.30", "context.reporter.kind": "outbound", "connection.mtls": false,
			"destination.service.name": "unknown", "request.host": "h", "request.path": "/x"},
		{"context.protocol": "tcp", "request.useragent": "Prometheus/2.50", "destination.service.name": "unknown"},
		{"context.protocol": "http", "context.reporter.kind": "inbound"}}
}

func corpus() []string {
	var out []string
	for _, c := range evalCases() {
		out = append(out, c.src)
	}
	for _, c := range evalErrorCases() {
		out = append(out, c.src)
	}
	out = append(out, fuzzSeeds()...)
	// The forms the typed path takes short cuts for.
	return append(out, `request.path == "/v1/damage?analytic=x"`, `"/x" != request.path`, `(api | request.path | "d") == "d"`,
		`api | "none"`, `api | request.path | "none"`, `connection.mtls == false`, `false == connection.mtls`, `true != connection.mtls`,
		`match((api | "-"), "kube*") == false`, `match(request.path, "/v1/*")`, `match(api, "x")`, `request.path == request.path`,
		`context.reporter.kind == "inbound"`, `(context.reporter.kind | "inbound") == "outbound"`,
		// Istio 1.7's standard instances and rules.
		`conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")`,
		`destination.service.name | conditional((destination.service.name | "unknown") == "unknown", "unknown", request.host)`,
		`request.host | conditional((destination.service.name | "unknown") == "unknown", "unknown", request.host)`,
		`conditional((context.reporter.kind | "inbound") == "outbound", "unknown", conditional(connection.mtls | false, "mutual_tls", "none"))`,
		`response.code | 200`, `request.size | response.code | 0`, `connection.mtls | false`, `connection.mtls | (api == "x")`,
		`(context.protocol == "http" || context.protocol == "grpc") && (match((request.useragent | "-"), "kube-probe*") == false) && (match((request.useragent | "-"), "Prometheus*") == false)`,
		`!(connection.mtls | false) || api != "a"`, `conditionalString(connection.mtls, api, request.path)`,
		`conditionalString(api == "a", "x", request.path | "y")`, `conditional(connection.mtls, api, "x")`,
		`request.path == "/x" && connection.mtls`, `connection.mtls != (api == "x")`, `!connection.mtls == false`)
}

// TestProgramMatchesInterpreter holds the typed path to the interpreter on
// every expression of the test corpus, with the tables' own bags and a set
// of full, empty and partial ones.
func TestProgramMatchesInterpreter(t *testing.T) {
	for _, src := range []string{`api | "none"`, `request.path == "/x"`, `response.code | 200`,
		`conditional((context.reporter.kind | "inbound") == "outbound", "unknown", conditional(connection.mtls | false, "mutual_tls", "none"))`,
		`destination.service.host | conditional((destination.service.name | "unknown") == "unknown", "unknown", request.host)`,
		`(context.protocol == "http" || context.protocol == "grpc") && (match((request.useragent | "-"), "kube-probe*") == false) && (match((request.useragent | "-"), "Prometheus*") == false)`,
	} {
		m := manifest()
		m["destination.service.host"] = String // as Istio declares it
		e, err := Compile(src, m)
		require.NoError(t, err)
		p, err := e.Program(NewLayout(m))
		require.NoError(t, err)
		switch e.Type() {
		case String:
			require.NotNil(t, p.str, "%s takes the string short cut", src)
		case Bool:
			require.NotNil(t, p.boolf, "%s takes the bool short cut", src)
		case Int64:
			require.NotNil(t, p.intf, "%s takes the int short cut", src)
		}
	}
	n := 0
	for _, c := range evalCases() {
		e, err := Compile(c.src, manifest())
		require.NoError(t, err)
		sameResult(t, c.src, e, c.bag)
		n++
	}
	for _, c := range evalErrorCases() {
		e, err := Compile(c.src, manifest())
		require.NoError(t, err)
		sameResult(t, c.src, e, c.bag)
	}
	for _, src := range corpus() {
		e, err := Compile(src, manifest())
		if err != nil {
			continue
		}
		for _, b := range bags() {
			sameResult(t, src, e, b)
		}
	}
	require.Greater(t, n, 50)
}

func TestProgramOfConditionsAndParams(t *testing.T) {
	l := NewLayout(manifest())
	r, ok := recordOf(l, bag())
	require.True(t, ok)
	c, err := CompileCondition("", manifest())
	require.NoError(t, err)
	p, err := c.Program(l)
	require.NoError(t, err)
	got, err := p.EvalBool(r)
	require.NoError(t, err)
	require.True(t, got)

	for src, want := range map[any]any{1: 1.0, true: true, `"quoted"`: "quoted", "request.size | 7": int64(1235)} {
		e, err := CompileParam(src, manifest())
		require.NoError(t, err)
		p, err := e.Program(l)
		require.NoError(t, err)
		v, err := p.Eval(r)
		require.NoError(t, err)
		require.Equal(t, want, v.Interface(p.Type()), fmt.Sprint(src))
	}
}

func TestProgramNeedsTheAttributeSlots(t *testing.T) {
	e, err := Compile(`request.size == 1`, manifest())
	require.NoError(t, err)
	_, err = e.Program(NewLayout(Manifest{"request.path": String}))
	require.ErrorContains(t, err, "attribute 'request.size' has no INT64 slot")
	_, err = e.Program(NewLayout(Manifest{"request.size": String}))
	require.Error(t, err)
}

// TestProgramAllocatesNothing checks the claim of Program's doc comment for
// the forms rules are made of.
func TestProgramAllocatesNothing(t *testing.T) {
	l := NewLayout(manifest())
	r, ok := recordOf(l, bag())
	require.True(t, ok)
	for _, src := range []string{
		`match(request.path, "/v1/damage?analytic=*")`,
		`request.headers["user-agent"] | "unknown"`,
		`request.headers["nope"] | api | "unknown"`,
		`request.size | 0`,
		`conditional(response.code >= 500, "error", "ok")`,
		`request.path.startsWith("/v1") && connection.mtls == true || response.ratio < 0.5`,
		`"^/v[0-9]/".matches(request.path)`,
		`source.ip == source.ip`,
		`request.time < request.time`,
		`response.duration | "1s"`,
		`size(request.path) > 3`,
	} {
		e, err := Compile(src, manifest())
		require.NoError(t, err)
		p, err := e.Program(l)
		require.NoError(t, err)
		allocs := testing.AllocsPerRun(100, func() { _, _ = p.Eval(r) })
		require.Zero(t, allocs, src)
	}
}

func TestRecordReset(t *testing.T) {
	l := NewLayout(manifest())
	r := NewRecord(l)
	slot, _ := l.Slot("request.path")
	r.SetString(slot, "/x")
	require.True(t, r.Has(slot))
	require.Equal(t, []string{"request.path"}, r.Names())
	r.Reset()
	require.False(t, r.Has(slot))
	_, ok := r.Get("request.path")
	require.False(t, ok)
	r.gen = ^uint32(0)
	r.SetString(slot, "/y")
	r.Reset() // wraps
	require.False(t, r.Has(slot))
	ts, _ := l.Slot("request.time")
	r.SetTime(ts, 10, 2_500_000_000)
	v, _ := r.Value(ts)
	require.Equal(t, time.Unix(12, 500_000_000), v.Time())
	r.SetTime(ts, 10, -1)
	v, _ = r.Value(ts)
	require.Equal(t, time.Unix(9, 999_999_999), v.Time())
}

// FuzzProgram compiles whatever compiles and holds the typed path to the
// interpreter on it.
// fuzz budget: 20000x
func FuzzProgram(f *testing.F) {
	for _, s := range corpus() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Compile(src, manifest())
		if err != nil {
			return
		}
		for _, b := range bags() {
			sameResult(t, src, e, b)
		}
	})
}

// benchExprs are the expressions of Istio's requestcount instance and of the
// analytic sample's rule.
var benchExprs = []string{
	`match(request.path, "/v1/damage?analytic=*")`,
	`conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")`,
	`request.headers["user-agent"] | "unknown"`,
	`destination.service.name | "unknown"`,
	`response.code | 200`,
	`api | request.path | "x"`,
}

func benchManifest() Manifest {
	m := manifest()
	m["context.reporter.kind"] = String
	return m
}

// BenchmarkProgram evaluates benchExprs with the typed path.
func BenchmarkProgram(b *testing.B) {
	l := NewLayout(benchManifest())
	r, _ := recordOf(l, bag())
	var ps []*Program
	for _, src := range benchExprs {
		e, err := Compile(src, benchManifest())
		require.NoError(b, err)
		p, err := e.Program(l)
		require.NoError(b, err)
		ps = append(ps, p)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, p := range ps {
			if _, err := p.Eval(r); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkInterpreter evaluates benchExprs with Eval on a MapBag.
func BenchmarkInterpreter(b *testing.B) {
	bg := bag()
	var es []*Expr
	for _, src := range benchExprs {
		e, err := Compile(src, benchManifest())
		require.NoError(b, err)
		es = append(es, e)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, e := range es {
			if _, err := e.Eval(bg); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestAttributes(t *testing.T) {
	e, err := Compile(`request.headers[request.path | "x"] == "a" && "^x".matches(api) || size(request.path) > response.code`, manifest())
	require.NoError(t, err)
	require.Equal(t, []string{"api", "request.headers", "request.path", "response.code"}, e.Attributes())
	c, err := CompileCondition("", manifest())
	require.NoError(t, err)
	require.Empty(t, c.Attributes())
}

func TestInfallible(t *testing.T) {
	for src, want := range map[string]bool{
		`request.size | 0`:           true,
		`request.size`:               false,
		`request.headers["a"] | "x"`: true,
		`request.headers["a"]`:       false,
		`conditional((context.reporter.kind | "inbound") == "outbound", "a", "b")`: true,
		`conditional(connection.mtls, "a", "b")`:                                   false,
		`api | request.path | "x"`:                                                 true,
		`api | request.path`:                                                       false,
		`ip("1.2.3.4")`:                                                            false,
		`destination.service.host == dnsName("a")`:                                 false,
		`"x".matches(api | "")`:                                                    true,
		`"(".matches(api | "")`:                                                    false,
		`(api | "a").startsWith("a")`:                                              true,
		`"1"`:                                                                      true,
		`match((request.path | "-"), "kube-probe*") == false`:                      true,
	} {
		e, err := Compile(src, benchManifest())
		require.NoError(t, err, src)
		require.Equal(t, want, e.Infallible(), src)
		if want {
			_, err := e.Eval(MapBag{})
			require.NoError(t, err, "%s must not fail on an empty bag", src)
		}
	}
}

// FuzzInfallible: an expression said to be infallible never fails.
func FuzzInfallible(f *testing.F) {
	for _, s := range corpus() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Compile(src, manifest())
		if err != nil || !e.Infallible() {
			return
		}
		for _, b := range bags() {
			if _, err := e.Eval(b); err != nil {
				t.Fatalf("%q is said infallible but fails: %v", src, err)
			}
		}
	})
}
