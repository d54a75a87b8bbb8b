package bag

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

func manifest() expr.Manifest {
	return expr.Manifest{
		"request.path":      expr.String,
		"request.size":      expr.Int64,
		"request.headers":   expr.StringMap,
		"request.time":      expr.Timestamp,
		"response.duration": expr.Duration,
		"response.ratio":    expr.Double,
		"connection.mtls":   expr.Bool,
		"source.ip":         expr.IPAddress,
		"source.name":       expr.String,
	}
}

func TestFromFlags(t *testing.T) {
	ts := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		flags Flags
		want  expr.MapBag
	}{
		{"typed flags", Flags{
			String: "request.path=/v1/damage,source.name=a=b", Int64: "request.size=1235", Double: "response.ratio=0.5",
			Bool: "connection.mtls=true", Timestamp: "request.time=2020-01-02T03:04:05Z", Duration: "response.duration=10ms",
			Bytes: "source.ip=0a:00:00:01", StringMap: "request.headers=user-agent:curl;x:y",
		}, expr.MapBag{
			"request.path": "/v1/damage", "source.name": "a=b", "request.size": int64(1235), "response.ratio": 0.5,
			"connection.mtls": true, "request.time": ts, "response.duration": 10 * time.Millisecond,
			"source.ip": []byte{10, 0, 0, 1}, "request.headers": map[string]string{"user-agent": "curl", "x": "y"},
		}},
		{"sensing in mixc's order", Flags{Any: "a=12,b=1.5,c=true,d=2020-01-02T03:04:05Z,e=1s,f=ab,g=k:v,h=/path,i=-7"}, expr.MapBag{
			"a": int64(12), "b": 1.5, "c": true, "d": ts, "e": time.Second, "f": []byte{0xab},
			"g": map[string]string{"k": "v"}, "h": "/path", "i": int64(-7),
		}},
		{"-a applies last and replaces", Flags{String: "x=1", Any: "x=2"}, expr.MapBag{"x": int64(2)}},
		{"empty value", Flags{String: "x="}, expr.MapBag{"x": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := FromFlags(tt.flags)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	require.True(t, Flags{}.Empty())
	require.False(t, Flags{Any: "a=1"}.Empty())
}

func TestFromFlagsErrors(t *testing.T) {
	tests := []struct {
		flags Flags
		want  string
	}{
		{Flags{String: "request.path"}, `-s: attribute value "request.path" does not include an = sign`},
		{Flags{String: "=x"}, `-s: attribute value "=x" does not contain a valid name`},
		{Flags{Int64: "request.size=1.5"}, `-i request.size=1.5: strconv.ParseInt: parsing "1.5": invalid syntax`},
		{Flags{Bool: "b=maybe"}, `-b b=maybe: strconv.ParseBool: parsing "maybe": invalid syntax`},
		{Flags{Timestamp: "t=2020-01-02"}, `-t t=2020-01-02: parsing time "2020-01-02" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "T"`},
		{Flags{Bytes: "ip=zz"}, `--bytes_attributes ip=zz: strconv.ParseUint: parsing "zz": invalid syntax`},
		{Flags{StringMap: "h=nocolon"}, `--stringmap_attributes h=nocolon: nocolon is not a valid key/value pair in the form key:value`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, _, err := FromFlags(tt.flags)
			require.EqualError(t, err, tt.want)
		})
	}
}

func TestCheck(t *testing.T) {
	b, src, err := FromFlags(Flags{String: "source.ip=10.0.0.1", Any: "request.size=5"})
	require.NoError(t, err)
	require.NoError(t, Check(b, manifest(), src))
	require.Equal(t, net.IP{10, 0, 0, 1}, b["source.ip"], "IP text becomes the 4 bytes a proxy sends")

	tests := []struct {
		name  string
		flags Flags
		want  string
	}{
		{"unknown with a suggestion", Flags{String: "request.pth=/"}, `unknown attribute "request.pth": no attribute manifest declares it (did you mean request.path?)`},
		{"unknown, nothing close", Flags{String: "zzz=/"}, `unknown attribute "zzz": no attribute manifest declares it`},
		{"wrong typed flag", Flags{String: "request.size=5"}, `attribute request.size is INT64 in the attribute manifest: -s gives STRING; use -i`},
		{"mixc's sensing quirk", Flags{Any: "source.name=ab"}, `attribute source.name is STRING in the attribute manifest: -a sensed bytes from ab; pass it with -s`},
		{"sensed a number for a string", Flags{Any: "source.name=200"}, `attribute source.name is STRING in the attribute manifest: -a sensed INT64 from 200; pass it with -s`},
		{"bad IP text", Flags{String: "source.ip=nope"}, `attribute source.ip is IP_ADDRESS but "nope" is not an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, src, err := FromFlags(tt.flags)
			require.NoError(t, err)
			require.EqualError(t, Check(b, manifest(), src), tt.want)
		})
	}
	require.EqualError(t, Check(expr.MapBag{"request.size": "x"}, manifest(), nil), `attribute request.size is INT64 in the attribute manifest, got STRING "x"`)
}

func TestParse(t *testing.T) {
	doc := `
- request.path: /v1/damage?analytic=1
  request.size: 10
  response.ratio: 1
  connection.mtls: false
  request.time: 2020-01-02T03:04:05Z
  response.duration: 1.5s
  source.ip: "::1"
  request.headers: {user-agent: curl, x-n: 5}
  source.name: 42
- {request.path: /health}
`
	bags, err := Parse("bags.yaml", []byte(doc), manifest())
	require.NoError(t, err)
	require.Equal(t, []expr.MapBag{{
		"request.path": "/v1/damage?analytic=1", "request.size": int64(10), "response.ratio": 1.0, "connection.mtls": false,
		"request.time": time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC), "response.duration": 1500 * time.Millisecond,
		"source.ip": net.ParseIP("::1"), "request.headers": map[string]string{"user-agent": "curl", "x-n": "5"}, "source.name": "42",
	}, {"request.path": "/health"}}, bags)

	json := `[{"request.path": "/a", "request.size": 3}, {"source.ip": "10.1.2.3"}]`
	bags, err = Parse("bags.json", []byte(json), manifest())
	require.NoError(t, err)
	require.Equal(t, []expr.MapBag{{"request.path": "/a", "request.size": int64(3)}, {"source.ip": net.IP{10, 1, 2, 3}}}, bags)

	bags, err = Parse("one.yaml", []byte("request.path: /a\n---\nrequest.path: /b\n"), manifest())
	require.NoError(t, err)
	require.Len(t, bags, 2, "one bag per YAML document")
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"unknown attribute", "- request.pat: /\n", `f.yaml:1: unknown attribute "request.pat": no attribute manifest declares it (did you mean request.path?)`},
		{"int", "- request.size: ten\n", `f.yaml:1: request.size: want an INT64 (an integer), got "ten"`},
		{"double", "- response.ratio: x\n", `f.yaml:1: response.ratio: want a DOUBLE (a number), got "x"`},
		{"bool", "- connection.mtls: 1\n", `f.yaml:1: connection.mtls: want a BOOL (true or false), got "1"`},
		{"timestamp", "- request.time: yesterday\n", `f.yaml:1: request.time: want a TIMESTAMP in RFC 3339 (2020-01-02T03:04:05Z), got "yesterday"`},
		{"duration", "- response.duration: 10\n", `f.yaml:1: response.duration: want a DURATION such as 10ms or 1.5s, got "10"`},
		{"ip", "- source.ip: 300.1.1.1\n", `f.yaml:1: source.ip: want an IP_ADDRESS such as 10.0.0.1, got "300.1.1.1"`},
		{"string map", "- request.headers: x\n", `f.yaml:1: request.headers: want a STRING_MAP (a mapping of strings), got "x"`},
		{"string map value", "- request.headers: {a: [1]}\n", `f.yaml:1: request.headers: key a: want a string, got a list`},
		{"null", "- request.path:\n", `f.yaml:1: request.path: want a STRING value, got null`},
		{"list for a scalar", "- request.path: [a]\n", `f.yaml:1: request.path: want a STRING value, got a list`},
		{"twice", "- {request.path: a, request.path: b}\n", `f.yaml:1: attribute request.path is set twice in one bag`},
		{"not a mapping", "- 5\n", `f.yaml:1: each bag must be a mapping of attribute names to values`},
		{"scalar document", "5\n", `f.yaml:1: want a list of attribute bags or one bag (a mapping)`},
		{"empty", "", `f.yaml: no attribute bags`},
		{"bad YAML", "- [\n", "f.yaml:1: invalid YAML: did not find expected node content"},
		{"errors on several lines", "- request.size: x\n- response.ratio: y\n", "f.yaml:1: request.size: want an INT64 (an integer), got \"x\"\nf.yaml:2: response.ratio: want a DOUBLE (a number), got \"y\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.doc), manifest())
			require.EqualError(t, err, tt.want)
		})
	}
}

func TestReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bags.yaml")
	require.NoError(t, os.WriteFile(path, []byte("- request.path: /x\n"), 0o600))
	bags, err := ReadFile(path, manifest())
	require.NoError(t, err)
	require.Equal(t, []expr.MapBag{{"request.path": "/x"}}, bags)
	_, err = ReadFile(filepath.Join(t.TempDir(), "none.yaml"), manifest())
	require.ErrorContains(t, err, "no such file")
}
