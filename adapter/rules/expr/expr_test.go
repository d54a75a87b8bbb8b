package expr

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func manifest() Manifest {
	return Manifest{
		"request.path":             String,
		"request.size":             Int64,
		"request.headers":          StringMap,
		"request.time":             Timestamp,
		"response.code":            Int64,
		"response.duration":        Duration,
		"response.ratio":           Double,
		"source.ip":                IPAddress,
		"source.namespace":         String,
		"destination.service.name": String,
		"destination.service.host": DNSName,
		"destination.principal":    EmailAddress,
		"request.referer":          URI,
		"connection.mtls":          Bool,
		"context.reporter.kind":    String,
		"api":                      String,
	}
}

func bag() MapBag {
	return MapBag{
		"request.path":             "/v1/damage?analytic=x",
		"request.size":             int64(1235),
		"request.headers":          map[string]string{"user-agent": "curl/8", "x-empty": ""},
		"request.time":             time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC),
		"response.code":            int64(200),
		"response.duration":        10 * time.Millisecond,
		"response.ratio":           0.5,
		"source.ip":                []byte{10, 0, 0, 1},
		"destination.service.name": "reviews",
		"destination.service.host": "Reviews.Default.svc.cluster.local.",
		"destination.principal":    "Admin@Example.com",
		"request.referer":          "HTTP://Example.com:80/a",
		"connection.mtls":          true,
	}
}

func TestCompileTypes(t *testing.T) {
	tests := []struct {
		src  string
		want ValueType
	}{
		{`request.path`, String},
		{`request.size`, Int64},
		{`api`, String},
		{`request.headers`, StringMap},
		{`request.headers["user-agent"]`, String},
		{`request.size | 0`, Int64},
		{`request.path | request.headers["x"] | "unknown"`, String},
		{`"abc"`, String},
		{"`raw`", String},
		{`'c'`, String},
		{`42`, Int64},
		{`010`, Int64},
		{`4.5`, Double},
		{`1e3`, Double},
		{`true`, Bool},
		{`FALSE`, Bool},
		{`"10ms"`, Duration},
		{`"1.5s"`, Duration},
		{`"0"`, Duration},
		{`response.duration | "2m"`, Duration},
		{`request.size == 200`, Bool},
		{`request.size != 200`, Bool},
		{`request.size < 10 && response.ratio >= 0.5 || connection.mtls`, Bool},
		{`request.path <= "b"`, Bool},
		{`request.time > timestamp("2020-01-01T00:00:00Z")`, Bool},
		{`(request.size)`, Int64},
		{`match(request.path, "/v1/damage?analytic=*")`, Bool},
		{`conditional(connection.mtls, "yes", "no")`, String},
		{`conditional(connection.mtls, request.size, 0)`, Int64},
		{`request.path.startsWith("/v1")`, Bool},
		{`request.path.endsWith("x")`, Bool},
		{`"/v[0-9]".matches(request.path)`, Bool},
		{`(request.path | "x").startsWith("/")`, Bool},
		{`ip("1.2.3.4")`, IPAddress},
		{`source.ip == ip("10.0.0.1")`, Bool},
		{`timestamp("2015-01-02T15:04:35Z")`, Timestamp},
		{`email("a@b.c")`, EmailAddress},
		{`dnsName("istio.io")`, DNSName},
		{`uri("http://istio.io")`, URI},
		{`destination.service.host == dnsName("reviews.default.svc.cluster.local")`, Bool},
		{`size(request.path)`, Int64},
		{`toLower(request.path)`, String},
		{`request.path + "?"`, String},
		{`request.size + 1`, Int64},
		{`emptyStringMap()`, StringMap},
		{`conditionalString(connection.mtls, "a", "b")`, String},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			e, err := Compile(tt.src, manifest())
			require.NoError(t, err)
			require.Equal(t, tt.want, e.Type())
			require.Equal(t, tt.src, e.String())
			require.Empty(t, e.Warnings(), "Mixer accepts this form")
		})
	}
}

// TestCompileWarnings covers the forms accepted here but rejected by a real Mixer 1.7:
// each compiles, evaluates, and warns with the form Mixer accepts.
func TestCompileWarnings(t *testing.T) {
	tests := []struct {
		src  string
		bag  MapBag
		want any
		warn []string
	}{
		{`!connection.mtls`, bag(), false, []string{
			`expression "!connection.mtls": a real Mixer rejects the ! operator (unknown function: NOT); write connection.mtls == false instead (position 1)`}},
		{`!(request.size > 5000)`, bag(), true, []string{
			`expression "!(request.size > 5000)": a real Mixer rejects the ! operator (unknown function: NOT); write (request.size > 5000) == false instead (position 1)`}},
		{`!!connection.mtls`, bag(), true, []string{
			`expression "!!connection.mtls": a real Mixer rejects the ! operator (unknown function: NOT); write !connection.mtls == false instead (position 1)`,
			`expression "!!connection.mtls": a real Mixer rejects the ! operator (unknown function: NOT); write connection.mtls == false instead (position 2)`}},
		{`startsWith(request.path, "/v1")`, bag(), true, []string{
			`expression "startsWith(request.path, \"/v1\")": a real Mixer rejects startsWith as a function (it is only a method); write request.path.startsWith("/v1") instead (position 1)`}},
		{`endsWith(request.path, "=y")`, bag(), false, []string{
			`expression "endsWith(request.path, \"=y\")": a real Mixer rejects endsWith as a function (it is only a method); write request.path.endsWith("=y") instead (position 1)`}},
		{`endsWith(request.path | "x", "x")`, MapBag{}, true, []string{
			`expression "endsWith(request.path | \"x\", \"x\")": a real Mixer rejects endsWith as a function (it is only a method); write (request.path | "x").endsWith("x") instead (position 1)`}},
		{`startsWith(toLower(request.path), "/v")`, bag(), true, []string{
			`expression "startsWith(toLower(request.path), \"/v\")": a real Mixer rejects startsWith as a function (it is only a method); write toLower(request.path).startsWith("/v") instead (position 1)`}},
		{`match(request.path, "/v1/*") && !startsWith(request.path, "/v1/admin")`, bag(), true, []string{
			`expression "match(request.path, \"/v1/*\") && !startsWith(request.path, \"/v1/admin\")": a real Mixer rejects the ! operator (unknown function: NOT); write startsWith(request.path, "/v1/admin") == false instead (position 33)`,
			`expression "match(request.path, \"/v1/*\") && !startsWith(request.path, \"/v1/admin\")": a real Mixer rejects startsWith as a function (it is only a method); write request.path.startsWith("/v1/admin") instead (position 34)`}},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			e, err := Compile(tt.src, manifest())
			require.NoError(t, err)
			require.Equal(t, Bool, e.Type())
			require.Equal(t, tt.warn, e.Warnings())
			got, err := e.Eval(tt.bag)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestWarningsPropagateThroughConditionsAndParams(t *testing.T) {
	c, err := CompileCondition(`!connection.mtls`, manifest())
	require.NoError(t, err)
	require.Len(t, c.Warnings(), 1)
	p, err := CompileParam(`conditional(endsWith(request.path, "x"), 1, 0)`, manifest())
	require.NoError(t, err)
	require.Equal(t, Int64, p.Type())
	require.Len(t, p.Warnings(), 1)
	require.Contains(t, p.Warnings()[0], `write request.path.endsWith("x") instead`)
	// Warnings are a copy: callers cannot change the compiled expression.
	w := c.Warnings()
	w[0] = "changed"
	require.NotEqual(t, "changed", c.Warnings()[0])
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		src  string
		want string
	}{
		{`request.size == "a"`, `expression "request.size == \"a\"": type mismatch: INT64 == STRING (position 14)`},
		{`nosuch.attr`, `expression "nosuch.attr": unknown attribute 'nosuch.attr' (position 1)`},
		{`request.size == nosuch`, `expression "request.size == nosuch": unknown attribute 'nosuch' (position 17)`},
		{`request.pth == "/"`, `expression "request.pth == \"/\"": unknown attribute 'request.pth' (did you mean request.path?) (position 1)`},
		{`request.sise | 0`, `expression "request.sise | 0": unknown attribute 'request.sise' (did you mean request.size?) (position 1)`},
		{`request.size | "x"`, `expression "request.size | \"x\"": type mismatch: INT64 | STRING (position 14)`},
		{`request.size | 0.5`, `expression "request.size | 0.5": type mismatch: INT64 | DOUBLE (position 14)`},
		{`request.path == "1s"`, `expression "request.path == \"1s\"": type mismatch: STRING == DURATION (position 14)`},
		{`request.size ==`, `expression "request.size ==": syntax error: expected operand, found 'EOF' (position 16)`},
		{``, `expression "": syntax error: expected operand, found 'EOF' (position 1)`},
		{`request.size request.path`, `expression "request.size request.path": syntax error: expected 'EOF', found request (position 14)`},
		{`!request.size`, `expression "!request.size": !: argument 1 has type INT64, want BOOL (position 2)`},
		{`NOT(true)`, `expression "NOT(true)": unknown function 'NOT' (position 1)`},
		{`startsWith(request.path)`, `expression "startsWith(request.path)": startsWith is a method: call it as s.startsWith(...) (position 1)`},
		{`startsWith(request.size, "1")`, `expression "startsWith(request.size, \"1\")": startsWith: receiver has type INT64, want STRING (position 12)`},
		{`endsWith(request.path, 1)`, `expression "endsWith(request.path, 1)": endsWith: argument 1 has type INT64, want STRING (position 24)`},
		{`-1`, `expression "-1": unary - is not supported by Mixer, so negative literals cannot be written (position 1)`},
		{`request.size * 2`, `expression "request.size * 2": operator * is not supported (position 14)`},
		{`request.size & 2`, `expression "request.size & 2": operator & is not supported (position 14)`},
		{`0x10`, `expression "0x10": invalid INT64 literal 0x10: Mixer reads integers in base 10 only (position 1)`},
		{`99999999999999999999`, `expression "99999999999999999999": invalid INT64 literal 99999999999999999999: Mixer reads integers in base 10 only (position 1)`},
		{`1i`, `expression "1i": unsupported literal 1i (position 1)`},
		{`10ms`, `expression "10ms": syntax error: expected 'EOF', found ms (position 3)`},
		{`request.size && true`, `expression "request.size && true": operator && needs BOOL operands, got INT64 (position 1)`},
		{`true || request.path`, `expression "true || request.path": operator || needs BOOL operands, got STRING (position 9)`},
		{`request.path["x"]`, `expression "request.path[\"x\"]": cannot index a STRING: only STRING_MAP values can be indexed (position 1)`},
		{`request.headers[1]`, `expression "request.headers[1]": map key has type INT64, want STRING (position 17)`},
		{`match(request.size, "a*")`, `expression "match(request.size, \"a*\")": match: argument 1 has type INT64, want STRING (position 7)`},
		{`match(request.path)`, `expression "match(request.path)": match takes 2 argument(s), got 1 (position 1)`},
		{`match(request.path, "a", "b")`, `expression "match(request.path, \"a\", \"b\")": match takes 2 argument(s), got 3 (position 1)`},
		{`nosuch(1)`, `expression "nosuch(1)": unknown function 'nosuch' (position 1)`},
		{`request.path.match("a")`, `expression "request.path.match(\"a\")": match is a function, not a method: call it as match(...) (position 14)`},
		{`request.size.startsWith("1")`, `expression "request.size.startsWith(\"1\")": startsWith: receiver has type INT64, want STRING (position 1)`},
		{`conditional(request.size, 1, 2)`, `expression "conditional(request.size, 1, 2)": conditional: condition has type INT64, want BOOL (position 13)`},
		{`conditional(true, "a", 2)`, `expression "conditional(true, \"a\", 2)": conditional: branches have different types: STRING and INT64 (position 24)`},
		{`response.duration == "10ms"`, `expression "response.duration == \"10ms\"": operator == is not supported for DURATION in Mixer (position 19)`},
		{`response.duration < "10ms"`, `expression "response.duration < \"10ms\"": operator < is not supported for DURATION in Mixer (position 19)`},
		{`request.headers == emptyStringMap()`, `expression "request.headers == emptyStringMap()": operator == is not supported for STRING_MAP in Mixer (position 17)`},
		{`connection.mtls < true`, `expression "connection.mtls < true": operator < is not supported for BOOL in Mixer (position 17)`},
		{`source.ip > ip("1.2.3.4")`, `expression "source.ip > ip(\"1.2.3.4\")": operator > is not supported for IP_ADDRESS in Mixer (position 11)`},
		{`true + false`, `expression "true + false": operator + is not supported for BOOL in Mixer (position 6)`},
		{`request.time + request.time`, `expression "request.time + request.time": operator + is not supported for TIMESTAMP in Mixer (position 14)`},
		{`size(request.size)`, `expression "size(request.size)": size: argument 1 has type INT64, want STRING (position 6)`},
		{`ip("1.2.3.4").x`, `expression "ip(\"1.2.3.4\").x": unsupported selector "x": only attribute names may contain dots (position 15)`},
		{`request.headers["a"].startsWith("b")`, `expression "request.headers[\"a\"].startsWith(\"b\")": unsupported method receiver in call to startsWith (position 1)`},
		{`(match)(request.path, "a")`, `expression "(match)(request.path, \"a\")": unsupported call: only named functions and methods can be called (position 1)`},
		{`match(request.path...)`, `expression "match(request.path...)": ... is not supported (position 19)`},
		{`request.path[1:2]`, `expression "request.path[1:2]": unsupported expression "request.path[1:2]" (position 1)`},
		{`[]string{"a"}`, `expression "[]string{\"a\"}": unsupported expression "[]string{\"a\"}" (position 1)`},
		{`request.headers[*]`, `expression "request.headers[*]": syntax error: expected operand, found ']' (position 18)`},
		{`request.path == "\q"`, `expression "request.path == \"\\q\"": syntax error: unknown escape sequence (position 19)`},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			e, err := Compile(tt.src, manifest())
			require.Nil(t, e)
			require.EqualError(t, err, tt.want)
			var ce *Error
			require.True(t, errors.As(err, &ce))
			require.Equal(t, tt.src, ce.Expr)
		})
	}
}

func TestEval(t *testing.T) {
	tests := evalCases()

	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			e, err := Compile(tt.src, manifest())
			require.NoError(t, err)
			got, err := e.Eval(tt.bag)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestEvalErrors(t *testing.T) {
	tests := evalErrorCases()

	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			e, err := Compile(tt.src, manifest())
			require.NoError(t, err)
			got, err := e.Eval(tt.bag)
			require.Nil(t, got)
			require.EqualError(t, err, tt.want)
		})
	}
}

func TestLookupErrorIsTyped(t *testing.T) {
	e, err := Compile(`request.size | response.code`, manifest())
	require.NoError(t, err)
	_, err = e.Eval(MapBag{})
	var le *LookupError
	require.ErrorAs(t, err, &le)
	require.Equal(t, "response.code", le.Name)
}

func TestCompileCondition(t *testing.T) {
	e, err := CompileCondition("", manifest())
	require.NoError(t, err)
	require.Equal(t, Bool, e.Type())
	ok, err := e.EvalBool(MapBag{})
	require.NoError(t, err)
	require.True(t, ok)

	e, err = CompileCondition(`match(request.path, "/v1/*") && response.code == 200`, manifest())
	require.NoError(t, err)
	ok, err = e.EvalBool(bag())
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = e.EvalBool(MapBag{"request.path": "/v1/", "response.code": int64(500)})
	require.NoError(t, err)
	require.False(t, ok)
	_, err = e.EvalBool(MapBag{})
	require.EqualError(t, err, "lookup failed: 'request.path'")

	_, err = CompileCondition(`request.path`, manifest())
	require.EqualError(t, err, `expression "request.path": evaluated to type STRING, expected type BOOL`)
	_, err = CompileCondition(`request.size == "a"`, manifest())
	require.EqualError(t, err, `expression "request.size == \"a\"": type mismatch: INT64 == STRING (position 14)`)

	e, err = Compile(`request.size`, manifest())
	require.NoError(t, err)
	_, err = e.EvalBool(bag())
	require.EqualError(t, err, `expression "request.size" has type INT64, not BOOL`)
}

func TestCompileParam(t *testing.T) {
	tests := []struct {
		name     string
		in       any
		wantType ValueType
		want     any
	}{
		{"yaml int is a double", 1, Double, 1.0},
		{"yaml int64 is a double", int64(7), Double, 7.0},
		{"yaml float", 2.5, Double, 2.5},
		{"yaml bool", true, Bool, true},
		{"double-quoted literal", `"abc"`, String, "abc"},
		{"single-quoted literal", `'abc'`, String, "abc"},
		{"quoted duration stays a string", `"10s"`, String, "10s"},
		{"quotes are stripped without unescaping", `"a\"b"`, String, `a\"b`},
		{"quoted string that looks like two literals", `"a" + "b"`, String, `a" + "b`},
		{"integer string is an INT64 expression", "200", Int64, int64(200)},
		{"expression", "request.size | 0", Int64, int64(1235)},
		{"string expression", `request.headers["user-agent"] | "unknown"`, String, "curl/8"},
		{"duration literal expression", "response.duration", Duration, 10 * time.Millisecond},
		{"single character is an expression", "1", Int64, int64(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := CompileParam(tt.in, manifest())
			require.NoError(t, err)
			require.Equal(t, tt.wantType, e.Type())
			got, err := e.Eval(bag())
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestCompileParamErrors(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"null", nil, "unsupported param value <nil> of type <nil>: want a string, number or bool"},
		{"list", []any{"a"}, "unsupported param value [a] of type []interface {}: want a string, number or bool"},
		{"bad expression", "request.size | \"x\"", `expression "request.size | \"x\"": type mismatch: INT64 | STRING (position 14)`},
		{"empty string", "", `expression "": syntax error: expected operand, found 'EOF' (position 1)`},
		{"string map", "request.headers", `expression "request.headers": unsupported type: STRING_MAP cannot be sent as an istio.policy.v1beta1.Value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := CompileParam(tt.in, manifest())
			require.Nil(t, e)
			require.EqualError(t, err, tt.want)
		})
	}
}

func TestValueType(t *testing.T) {
	for vt := String; vt <= StringMap; vt++ {
		got, err := ParseValueType(vt.String())
		require.NoError(t, err)
		require.Equal(t, vt, got)
	}
	require.Equal(t, "IP_ADDRESS", IPAddress.String())
	require.Equal(t, 6, int(IPAddress), "numbers must match istio.policy.v1beta1.ValueType")
	require.Equal(t, 10, int(Duration))
	require.Equal(t, "VALUE_TYPE_UNSPECIFIED", Unspecified.String())
	require.Equal(t, "ValueType(42)", ValueType(42).String())
	_, err := ParseValueType("VALUE_TYPE_UNSPECIFIED")
	require.EqualError(t, err, `unknown value type "VALUE_TYPE_UNSPECIFIED"`)
	_, err = ParseValueType("string")
	require.EqualError(t, err, `unknown value type "string"`)
}

func TestExprIsSafeForConcurrentUse(t *testing.T) {
	e, err := Compile(`request.headers["user-agent"] | "x"`, manifest())
	require.NoError(t, err)
	done := make(chan any)
	for range 8 {
		go func() {
			v, _ := e.Eval(bag())
			done <- v
		}()
	}
	for range 8 {
		require.Equal(t, "curl/8", <-done)
	}
}

// evalCases is the table of TestEval, shared with TestProgramMatchesInterpreter.
func evalCases() []evalCase {
	return []evalCase{
		{`request.path`, bag(), "/v1/damage?analytic=x"},
		{`request.size`, bag(), int64(1235)},
		{`response.duration`, bag(), 10 * time.Millisecond},
		{`response.duration`, MapBag{"response.duration": int64(5)}, time.Duration(5)},
		{`request.size`, MapBag{"request.size": time.Second}, int64(time.Second)},
		{`source.ip`, bag(), net.IP{10, 0, 0, 1}},
		{`request.headers["user-agent"]`, bag(), "curl/8"},
		{`request.headers["missing"]`, bag(), ""},
		{`request.headers["missing"] | "dflt"`, bag(), "dflt"},
		{`request.headers["x-empty"] | "dflt"`, bag(), ""},
		{`request.headers[request.path]`, bag(), ""},
		{`request.headers[request.path | "user-agent"] | "d"`, MapBag{"request.headers": map[string]string{"user-agent": "ua"}}, "ua"},
		{`request.headers[request.path] | "d"`, MapBag{"request.headers": map[string]string{}}, "d"},
		{`request.headers["a"] | "d"`, MapBag{}, "d"},
		{`request.size | 0`, MapBag{}, int64(0)},
		{`request.size | 0`, bag(), int64(1235)},
		{`api | request.path | "x"`, bag(), "/v1/damage?analytic=x"},
		{`api | request.path | "x"`, MapBag{}, "x"},
		{`(api | request.path) | "x"`, MapBag{"api": "a"}, "a"},
		{`response.duration | "2m"`, MapBag{}, 2 * time.Minute},
		{`conditional(connection.mtls, "yes", "no") | "z"`, MapBag{"connection.mtls": false}, "no"},
		{`"a\tb\"c"`, MapBag{}, "a\tb\"c"},
		{`"1.5s"`, MapBag{}, 1500 * time.Millisecond},
		{`4.25`, MapBag{}, 4.25},
		{`request.size == 1235`, bag(), true},
		{`1235 == request.size`, bag(), true},
		{`request.size != 1235`, bag(), false},
		{`request.size < 1235`, bag(), false},
		{`request.size <= 1235`, bag(), true},
		{`request.size > 1000`, bag(), true},
		{`request.size >= 1236`, bag(), false},
		{`response.ratio < 0.75`, bag(), true},
		{`request.path < "/w"`, bag(), true},
		{`request.path > "/w"`, bag(), false},
		{`request.time < timestamp("2021-01-01T00:00:00Z")`, bag(), true},
		{`request.time >= timestamp("2020-01-02T03:04:05Z")`, bag(), true},
		{`request.time == timestamp("2020-01-02T04:04:05+01:00")`, bag(), true},
		{`connection.mtls == true`, bag(), true},
		{`connection.mtls && request.size > 1`, bag(), true},
		{`connection.mtls && request.size > 1`, MapBag{"connection.mtls": false}, false},
		{`connection.mtls || request.size > 1`, MapBag{"connection.mtls": true}, true},
		{`connection.mtls || request.size > 1`, MapBag{"connection.mtls": false, "request.size": int64(0)}, false},
		{`match(request.path, "/v1/damage?analytic=*")`, bag(), true},
		{`match(request.path, "/v2/*")`, bag(), false},
		{`match(request.path, "*=x")`, bag(), true},
		{`match(request.path, "*")`, bag(), true},
		{`match(request.path, "/v1/*/x")`, bag(), false},
		{`match("a*b", "a*b")`, MapBag{}, true},
		{`match(request.path, "/v1/damage?analytic=x")`, bag(), true},
		{`request.path.startsWith("/v1")`, bag(), true},
		{`request.path.endsWith("=y")`, bag(), false},
		{`"^/v[0-9]/".matches(request.path)`, bag(), true},
		{`"damage".matches(request.path)`, bag(), true},
		{`conditional(connection.mtls, request.size, 0)`, bag(), int64(1235)},
		{`conditional(request.size > 5000, "big", "small")`, bag(), "small"},
		{`conditionalString(connection.mtls, "a", "b")`, bag(), "a"},
		{`size(request.path)`, bag(), int64(21)},
		{`size("héllo")`, MapBag{}, int64(6)},
		{`toLower("AbC")`, MapBag{}, "abc"},
		{`request.path + "!"`, bag(), "/v1/damage?analytic=x!"},
		{`request.size + 5`, bag(), int64(1240)},
		{`response.ratio + 0.25`, bag(), 0.75},
		{`emptyStringMap()["a"] | "none"`, MapBag{}, "none"},
		{`ip("1.2.3.4")`, MapBag{}, net.ParseIP("1.2.3.4")},
		{`source.ip == ip("10.0.0.1")`, bag(), true},
		{`source.ip != ip("::1")`, bag(), true},
		{`timestamp("2015-01-02T15:04:35Z")`, MapBag{}, time.Date(2015, 1, 2, 15, 4, 35, 0, time.UTC)},
		{`dnsName("istio.io")`, MapBag{}, "istio.io"},
		{`email("a@istio.io")`, MapBag{}, "a@istio.io"},
		{`uri("http://istio.io/x")`, MapBag{}, "http://istio.io/x"},
		{`destination.service.host == dnsName("reviews.default.svc.cluster.local")`, bag(), true},
		{`destination.service.host == dnsName("ratings.default.svc.cluster.local")`, bag(), false},
		{`destination.principal == email("Admin@example.COM")`, bag(), true},
		{`destination.principal == email("admin@example.com")`, bag(), false},
		{`request.referer == uri("http://example.com:80/a")`, bag(), true},
		{`request.referer == uri("http://example.com:81/a")`, bag(), false},
		{`request.referer == uri("ftp://example.com:80/a")`, bag(), false},
		{`request.referer == uri("http://example.com:80/b")`, bag(), false},
		{`request.referer == uri("http://other.com:80/a")`, bag(), false},
	}
}

// evalErrorCases is the table of TestEvalErrors, shared with TestProgramMatchesInterpreter.
func evalErrorCases() []evalErrorCase {
	return []evalErrorCase{
		{`request.size`, MapBag{}, "lookup failed: 'request.size'"},
		{`request.size == 1`, MapBag{}, "lookup failed: 'request.size'"},
		{`api | request.path`, MapBag{}, "lookup failed: 'request.path'"},
		{`request.headers["a"]`, MapBag{}, "lookup failed: 'request.headers'"},
		{`request.headers[request.path]`, MapBag{"request.headers": map[string]string{}}, "lookup failed: 'request.path'"},
		{`(request.size + 1) | 0`, MapBag{}, "lookup failed: 'request.size'"},
		{`conditional(connection.mtls, "a", "b") | "c"`, MapBag{}, "lookup failed: 'connection.mtls'"},
		{`connection.mtls && request.size > 1`, MapBag{"connection.mtls": true}, "lookup failed: 'request.size'"},
		{`request.path`, MapBag{"request.path": 7}, "error converting value to string: '7'"},
		{`request.size`, MapBag{"request.size": 7}, "error converting value to integer or duration: '7'"},
		{`response.ratio`, MapBag{"response.ratio": 1}, "error converting value to double: '1'"},
		{`connection.mtls`, MapBag{"connection.mtls": "true"}, "error converting value to bool: 'true'"},
		{`request.time`, MapBag{"request.time": "2020"}, "error converting value to TIMESTAMP: '2020' has Go type string"},
		{`source.ip`, MapBag{"source.ip": "10.0.0.1"}, "error converting value to IP_ADDRESS: '10.0.0.1' has Go type string"},
		{`request.headers["a"]`, MapBag{"request.headers": map[string]any{}}, "error converting value to STRING_MAP: 'map[]' has Go type map[string]interface {}"},
		{`ip("nope")`, MapBag{}, "could not convert nope to IP_ADDRESS"},
		{`timestamp("2020-01-01")`, MapBag{}, "could not convert '2020-01-01' to TIMESTAMP. expected format: '2006-01-02T15:04:05Z07:00'"},
		{`email("Bob <bob@istio.io>")`, MapBag{}, "error converting 'Bob <bob@istio.io>' to e-mail: display names are not allowed"},
		{`email("nope")`, MapBag{}, "error converting 'nope' to e-mail: 'mail: missing '@' or angle-addr'"},
		{`email("a@-x.io")`, MapBag{}, "error converting 'a@-x.io' to e-mail: 'error converting '-x.io' to dns name: 'idna: invalid label \"-x\"''"},
		{`dnsName("a..b")`, MapBag{}, "error converting 'a..b' to dns name: 'idna: invalid label \"a..b\"'"},
		{`uri("")`, MapBag{}, "error converting string to uri: empty string"},
		{`uri("%zz")`, MapBag{}, "error converting string to uri '%zz': 'parse \"%zz\": invalid URL escape \"%zz\"'"},
		{`"(".matches(request.path)`, MapBag{"request.path": "x"}, "error parsing regexp: missing closing ): `(`"},
	}
}

type evalCase struct {
	src  string
	bag  MapBag
	want any
}

type evalErrorCase struct {
	src  string
	bag  MapBag
	want string
}
