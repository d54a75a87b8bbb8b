package librato

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// The Go forms of the documented rules (§4), the reference the hand-written
// byte classes are checked against.
var (
	docMetricName = regexp.MustCompile(`^[A-Za-z0-9.:_-]{1,255}$`)
	docTagName    = regexp.MustCompile(`^[-.:_\w]{1,64}$`)
	docTagValue   = regexp.MustCompile(`^[-.:_?\\/\w ]{1,255}$`)
	docSource     = regexp.MustCompile(`^[A-Za-z0-9.:_-]{1,255}$`)
)

// alphabet mixes every allowed punctuation character with characters that
// look allowed but are not, upper case, multi-byte runes and invalid UTF-8.
const alphabet = "aZ09_.:-?\\/ \t\n\"'{}[]=,;+*#@!äé日\xff\x80"

func randomString(r *rand.Rand, maxLen int) string {
	var b strings.Builder
	runes := []rune(alphabet[:len(alphabet)-2])
	n := r.IntN(maxLen + 1)
	for b.Len() < n {
		if r.IntN(40) == 0 {
			b.WriteByte(alphabet[len(alphabet)-1-r.IntN(2)]) // invalid UTF-8 byte
			continue
		}
		b.WriteRune(runes[r.IntN(len(runes))])
	}
	return b.String()
}

// boundaryStrings are the lengths where the rules change.
func boundaryStrings() []string {
	var out []string
	for _, n := range []int{0, 1, 63, 64, 65, 254, 255, 256} {
		out = append(out, strings.Repeat("a", n), strings.Repeat("A", n), strings.Repeat(" ", n))
	}
	return append(out, "all", "ALL", "All", "all_", "a.b:c_d-e", "a b", `a?b\c/d`, "ä", "\xff")
}

func TestValidFunctionsMatchDocumentedRegexps(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	inputs := boundaryStrings()
	for range 5000 {
		inputs = append(inputs, randomString(r, 300))
	}
	for _, s := range inputs {
		require.Equal(t, docMetricName.MatchString(s), ValidMetricName(s), "metric name %q", s)
		require.Equal(t, docTagName.MatchString(s), ValidTagName(s), "tag name %q", s)
		require.Equal(t, docTagValue.MatchString(s), ValidTagValue(s), "tag value %q", s)
		require.Equal(t, docSource.MatchString(s) && !strings.EqualFold(s, "all"), ValidSource(s), "source %q", s)
	}
}

func TestSanitizeMetricName(t *testing.T) {
	tests := []struct {
		in, want string
		reason   Reason
	}{
		{"istio.request.size", "istio.request.size", 0},
		{"Istio.Requests:total_count-2", "Istio.Requests:total_count-2", 0},
		{"requests per second", "requests_per_second", ReasonReplaced},
		{"latency(ms)", "latency_ms_", ReasonReplaced},
		{"größe", "gr__e", ReasonReplaced}, // one replacement per rune, not per byte
		{"a\xffb", "a_b", ReasonReplaced},
		{"日本", "__", ReasonReplaced},
		{strings.Repeat("m", 256), strings.Repeat("m", 255), ReasonTruncated},
		{strings.Repeat("é", 300), strings.Repeat("_", 255), ReasonReplaced | ReasonTruncated},
		{"", "", ReasonEmpty},
	}
	for _, tt := range tests {
		got, r := SanitizeMetricName(tt.in)
		require.Equal(t, tt.want, got, "%q", tt.in)
		require.Equal(t, tt.reason, r, "%q: %v", tt.in, r)
	}
}

func TestSanitizeTagName(t *testing.T) {
	tests := []struct {
		in, want string
		reason   Reason
	}{
		{"destination_service", "destination_service", 0},
		{"k8s.io:app-name", "k8s.io:app-name", 0},
		{"Response_Code", "response_code", ReasonLowercased},
		{"response code", "response_code", ReasonReplaced},
		{"x/y", "x_y", ReasonReplaced}, // '/' is valid in values only
		{"Ä?", "__", ReasonReplaced},
		{strings.Repeat("T", 65), strings.Repeat("t", 64), ReasonLowercased | ReasonTruncated},
		{"", "", ReasonEmpty},
	}
	for _, tt := range tests {
		got, r := SanitizeTagName(tt.in)
		require.Equal(t, tt.want, got, "%q", tt.in)
		require.Equal(t, tt.reason, r, "%q: %v", tt.in, r)
	}
}

func TestSanitizeTagValue(t *testing.T) {
	tests := []struct {
		in, want string
		reason   Reason
	}{
		{"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", 0},
		{`/api/v1/items?id=3`, `/api/v1/items?id_3`, ReasonReplaced},
		{`c:\path with space`, `c:\path with space`, 0},
		{"GET", "get", ReasonLowercased},
		{"Mozilla/5.0 (X11)", "mozilla/5.0 _x11_", ReasonLowercased | ReasonReplaced},
		{"line\nbreak\ttab", "line_break_tab", ReasonReplaced},
		{strings.Repeat("v", 300), strings.Repeat("v", 255), ReasonTruncated},
		{"", "", ReasonEmpty},
	}
	for _, tt := range tests {
		got, r := SanitizeTagValue(tt.in)
		require.Equal(t, tt.want, got, "%q", tt.in)
		require.Equal(t, tt.reason, r, "%q: %v", tt.in, r)
	}
}

func TestSanitizeSource(t *testing.T) {
	tests := []struct {
		in, want string
		reason   Reason
	}{
		{"meshmetrics-0", "meshmetrics-0", 0},
		{"Pod.Name:1_x", "Pod.Name:1_x", 0}, // case-insensitive, so kept
		{"all", "all_", ReasonReserved},
		{"ALL", "ALL_", ReasonReserved},
		{"al l", "al_l", ReasonReplaced},
		{"all_", "all_", 0},
		{"host/1", "host_1", ReasonReplaced},
		{strings.Repeat("s", 256), strings.Repeat("s", 255), ReasonTruncated},
		{"", "", ReasonEmpty},
	}
	for _, tt := range tests {
		got, r := SanitizeSource(tt.in)
		require.Equal(t, tt.want, got, "%q", tt.in)
		require.Equal(t, tt.reason, r, "%q: %v", tt.in, r)
	}
}

// TestSanitizersProduceValidOutput checks the contract on arbitrary input:
// the result is valid (or empty and flagged), a fixed point, unchanged only
// when flagged so, and deterministic.
func TestSanitizersProduceValidOutput(t *testing.T) {
	sanitizers := []struct {
		name     string
		sanitize func(string) (string, Reason)
		valid    func(string) bool
		lower    bool
	}{
		{"metric name", SanitizeMetricName, ValidMetricName, false},
		{"tag name", SanitizeTagName, ValidTagName, true},
		{"tag value", SanitizeTagValue, ValidTagValue, true},
		{"source", SanitizeSource, ValidSource, false},
	}
	r := rand.New(rand.NewPCG(3, 4))
	inputs := boundaryStrings()
	for range 2000 {
		inputs = append(inputs, randomString(r, 300))
	}
	for _, s := range sanitizers {
		t.Run(s.name, func(t *testing.T) {
			for _, in := range inputs {
				checkSanitized(t, in, s.sanitize, s.valid, s.lower)
			}
		})
	}
}

func checkSanitized(t *testing.T, in string, sanitize func(string) (string, Reason), valid func(string) bool, lower bool) {
	t.Helper()
	out, r := sanitize(in)
	if in == "" {
		require.Equal(t, "", out)
		require.Equal(t, ReasonEmpty, r)
		return
	}
	require.False(t, r.Dropped(), "%q", in)
	require.True(t, valid(out), "%q -> %q", in, out)
	require.True(t, utf8.ValidString(out), "%q -> %q", in, out)
	require.Equal(t, r == 0, out == in, "%q -> %q (%v)", in, out, r)
	if lower {
		require.Equal(t, strings.ToLower(out), out)
	}
	again, r2 := sanitize(out)
	require.Equal(t, out, again, "not a fixed point: %q", out)
	require.Zero(t, r2)
	same, r3 := sanitize(in)
	require.Equal(t, out, same)
	require.Equal(t, r, r3)
}

func FuzzSanitizeMetricName(f *testing.F) {
	for _, s := range boundaryStrings() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSanitized(t, s, SanitizeMetricName, ValidMetricName, false) })
}

func FuzzSanitizeTagName(f *testing.F) {
	for _, s := range boundaryStrings() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSanitized(t, s, SanitizeTagName, ValidTagName, true) })
}

func FuzzSanitizeTagValue(f *testing.F) {
	for _, s := range boundaryStrings() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSanitized(t, s, SanitizeTagValue, ValidTagValue, true) })
}

func FuzzSanitizeSource(f *testing.F) {
	for _, s := range boundaryStrings() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSanitized(t, s, SanitizeSource, ValidSource, false) })
}

func TestReasonString(t *testing.T) {
	require.Equal(t, "none", Reason(0).String())
	require.Equal(t, "replaced|truncated", (ReasonReplaced | ReasonTruncated).String())
	require.Equal(t, "replaced|truncated|lowercased|empty|reserved",
		(ReasonReplaced | ReasonTruncated | ReasonLowercased | ReasonEmpty | ReasonReserved).String())
	require.True(t, (ReasonReplaced | ReasonLowercased).Has(ReasonLowercased))
	require.False(t, ReasonReplaced.Has(ReasonReplaced|ReasonTruncated))
}

func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func manyTags(n int) map[string]string {
	tags := make(map[string]string, n)
	for i := range n {
		tags[fmt.Sprintf("tag%02d", i)] = fmt.Sprintf("v%d", i)
	}
	return tags
}

func TestSanitizeTags(t *testing.T) {
	tests := []struct {
		name  string
		in    map[string]string
		limit int
		want  map[string]string
		rep   TagReport
	}{
		{
			name: "valid",
			in:   map[string]string{"reporter": "source", "response_code": "200"},
			want: map[string]string{"reporter": "source", "response_code": "200"},
		},
		{
			name: "nil",
		},
		{
			name: "altered names and values",
			in:   map[string]string{"Request Method": "GET", "path": "/a b", "ok": "x"},
			want: map[string]string{"request_method": "get", "path": "/a b", "ok": "x"},
			rep:  TagReport{Altered: ReasonReplaced | ReasonLowercased, AlteredTags: 1},
		},
		{
			name: "empty name or value dropped",
			in:   map[string]string{"": "x", "empty": "", "kept": "Y"},
			want: map[string]string{"kept": "y"},
			rep:  TagReport{Altered: ReasonLowercased, AlteredTags: 1, Empty: 2},
		},
		{
			name: "collision keeps the smallest original name",
			in:   map[string]string{"zone": "lower", "Zone": "upper", "zo ne": "space", "zo_ne": "underscore"},
			want: map[string]string{"zone": "upper", "zo_ne": "space"},
			rep:  TagReport{Altered: ReasonLowercased | ReasonReplaced, AlteredTags: 2, Duplicate: 2},
		},
		{
			name: "over the limit keeps the first names in order",
			in:   manyTags(60),
			want: manyTags(50), // tag00 .. tag49
			rep:  TagReport{OverLimit: 10},
		},
		{
			name:  "custom limit",
			in:    map[string]string{"c": "3", "a": "1", "b": "2"},
			limit: 2,
			want:  map[string]string{"a": "1", "b": "2"},
			rep:   TagReport{OverLimit: 1},
		},
		{
			name:  "limit above the API's is clamped",
			in:    manyTags(51),
			limit: 100,
			want:  manyTags(50),
			rep:   TagReport{OverLimit: 1},
		},
		{
			name: "limit is applied after sanitising",
			in: func() map[string]string {
				m := manyTags(50)
				m["Tag00"] = "dup" // sorts first, so it takes tag00's place
				m["AAA"] = "first"
				return m
			}(),
			want: func() map[string]string {
				m := manyTags(49)
				m["tag00"] = "dup"
				m["aaa"] = "first"
				return m
			}(),
			rep: TagReport{Altered: ReasonLowercased, AlteredTags: 2, Duplicate: 1, OverLimit: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := make(map[string]string, len(tt.in))
			for k, v := range tt.in {
				before[k] = v
			}
			// Map iteration order is random: repeat to catch dependence on it.
			for range 20 {
				got, rep := SanitizeTagsLimit(tt.in, tt.limit)
				require.Equal(t, tt.rep, rep)
				if len(tt.want) == 0 {
					require.Empty(t, got)
				} else {
					require.Equal(t, tt.want, got)
				}
				require.Equal(t, rep.Changed(), !sameMap(got, tt.in), "a changed set must be a new map")
				require.Equal(t, before, func() map[string]string {
					m := make(map[string]string, len(tt.in))
					for k, v := range tt.in {
						m[k] = v
					}
					return m
				}(), "input modified")
				for k, v := range got {
					require.True(t, ValidTagName(k), k)
					require.True(t, ValidTagValue(v), v)
				}
			}
		})
	}
}

func TestSanitizeTagsDropCountAddsUp(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		in := make(map[string]string)
		for range r.IntN(80) {
			in[randomString(r, 8)] = randomString(r, 8)
		}
		got, rep := SanitizeTags(in)
		require.Equal(t, len(in), len(got)+rep.Dropped())
		require.LessOrEqual(t, len(got), MaxTagsPerMeasurement)
		if rep.OverLimit > 0 {
			require.Len(t, got, MaxTagsPerMeasurement)
		}
	}
}

func TestFastPathsDoNotAllocate(t *testing.T) {
	name := "istio.request.duration"
	tags := manyTags(MaxTagsPerMeasurement)
	tags["path"] = `/api/v1/items?id:3`
	delete(tags, "tag00")
	var sink string
	var sinkTags map[string]string
	checks := []struct {
		what string
		f    func()
		want string
	}{
		{"metric name", func() { sink, _ = SanitizeMetricName(name) }, name},
		{"tag name", func() { sink, _ = SanitizeTagName("destination_workload") }, "destination_workload"},
		{"tag value", func() { sink, _ = SanitizeTagValue("reviews-v1 c:\\x") }, "reviews-v1 c:\\x"},
		{"source", func() { sink, _ = SanitizeSource("meshmetrics-0") }, "meshmetrics-0"},
	}
	for _, c := range checks {
		require.Zero(t, testing.AllocsPerRun(100, c.f), c.what)
		require.Equal(t, c.want, sink, c.what)
	}
	require.Zero(t, testing.AllocsPerRun(100, func() { sinkTags, _ = SanitizeTags(tags) }), "tags")
	require.True(t, sameMap(tags, sinkTags))
	require.Zero(t, testing.AllocsPerRun(100, func() {
		_ = ValidMetricName(name) && ValidTagName(name) && ValidTagValue(name) && ValidSource(name)
	}), "valid")
}

func BenchmarkSanitizeMetricName(b *testing.B) {
	for _, in := range []string{"istio.request.duration.seconds", "istio request duration (seconds)"} {
		b.Run(fmt.Sprintf("valid=%t", ValidMetricName(in)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				SanitizeMetricName(in)
			}
		})
	}
}

func BenchmarkSanitizeTags(b *testing.B) {
	valid := map[string]string{
		"reporter": "destination", "source_workload": "productpage-v1", "destination_service": "reviews.default.svc.cluster.local",
		"request_protocol": "http", "response_code": "200", "connection_security_policy": "mutual_tls",
	}
	invalid := map[string]string{"Reporter": "Destination", "request path": "/api/v1/items?id=3"}
	for name, tags := range map[string]map[string]string{"valid": valid, "invalid": invalid} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				SanitizeTags(tags)
			}
		})
	}
}
