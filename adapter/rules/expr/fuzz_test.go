package expr

import (
	"errors"
	"net"
	"testing"
	"time"
)

// FuzzCompile checks that parsing, checking and evaluating never panic, that compile
// errors are always *Error, and that every value has the Go type of its ValueType.
// fuzz budget: 100000x
func FuzzCompile(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Compile(src, manifest())
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Compile(%q) error %T is not *Error: %v", src, err, err)
			}
			return
		}
		for _, b := range []MapBag{bag(), {}} {
			v, err := e.Eval(b)
			if err != nil {
				continue
			}
			if !hasGoType(v, e.Type()) {
				t.Fatalf("Eval(%q) = %#v (%T), not a %s", src, v, v, e.Type())
			}
		}
		if _, err := CompileParam(src, manifest()); err != nil && src != "" && len(src) >= 2 && src[0] == src[len(src)-1] && (src[0] == '"' || src[0] == '\'') {
			t.Fatalf("CompileParam(%q) of a quoted literal failed: %v", src, err)
		}
	})
}

func hasGoType(v any, t ValueType) bool {
	switch v.(type) {
	case string:
		return t.stringLike()
	case int64:
		return t == Int64
	case float64:
		return t == Double
	case bool:
		return t == Bool
	case time.Time:
		return t == Timestamp
	case time.Duration:
		return t == Duration
	case net.IP:
		return t == IPAddress
	case map[string]string:
		return t == StringMap
	}
	return false
}

// fuzzSeeds are FuzzCompile's seeds, part of the typed path's corpus too.
func fuzzSeeds() []string {
	return []string{
		`request.size | 0`,
		`request.headers["user-agent"] | "unknown"`,
		`match(request.path, "/v1/damage?analytic=*") && connection.mtls == true`,
		`conditional(response.code >= 500, "error", "ok")`,
		`request.path.startsWith("/v1") || "x.*".matches(api)`,
		`source.ip == ip("10.0.0.1") && request.time < timestamp("2020-01-01T00:00:00Z")`,
		`destination.service.host == dnsName("a.b") && request.referer == uri("http://x")`,
		`response.duration | "1.5s"`,
		`size(request.path + "x") > 3`,
		`((api | request.path) | "x")`,
		`!x`, `-1`, `0x10`, `"\q"`, `a[`, ``,
	}
}
