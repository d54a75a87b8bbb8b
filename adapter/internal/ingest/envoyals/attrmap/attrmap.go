// Package attrmap turns one Envoy access-log entry (read in place by
// logentry) into an attribute bag (an expr.Record), exactly as Istio
// 1.7.8's Mixer builds its bag from a StreamAccessLogsMessage entry
// (mixer/pkg/attribute/envoyProtoBag.go, AccessLogProtoBag), and then, unless
// Options.MixerExact is set, fills the attributes Mixer left absent although
// the entry carries them (see Extensions). Strings are views of the received
// message; building a bag allocates nothing.
package attrmap

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
	"unsafe"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// ReporterUID is context.reporter.uid of every bag: it tells these bags
// from Mixer Reports during a migration.
const ReporterUID = "envoy_accesslog_service"

// Attributes the extended mapping adds that Istio's vocabulary has no name
// for. ExtensionManifest declares them.
const (
	AttrUpstreamIP      = "upstream.ip"
	AttrUpstreamPort    = "upstream.port"
	AttrUpstreamCluster = "upstream.cluster"
	AttrRouteName       = "route.name"
)

// ExtensionManifest is the attribute manifest of the attributes above, in
// the istio-system namespace, loaded next to Istio's standard manifests.
const ExtensionManifest = `apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata:
  name: envoyals
  namespace: istio-system
spec:
  name: meshmetrics-envoy-accesslog
  attributes:
    upstream.ip:
      valueType: IP_ADDRESS
      description: Address of the upstream host (common_properties.upstream_remote_address).
    upstream.port:
      valueType: INT64
      description: Port of the upstream host.
    upstream.cluster:
      valueType: STRING
      description: Envoy's upstream cluster, e.g. outbound|9080||reviews.default.svc.cluster.local.
    route.name:
      valueType: STRING
      description: Name of the route that served the request (common_properties.route_name).
`

// Options configure a Mapper.
type Options struct {
	// MixerExact builds the bag exactly as Mixer 1.7.8 does, response.time
	// bug included, and nothing more.
	MixerExact bool
	// HeaderAttributes maps a request header, as Envoy logs it (lower
	// case), to a string attribute: a workload identity header such as
	// x-source-workload: source.workload.name. Envoy logs only the headers
	// it is told to (additionalRequestHeadersToLog). Ignored when MixerExact.
	HeaderAttributes map[string]string
	// Needed, when set, names the attributes the config reads: the others
	// are left out of the bag (no expression can tell), and the parts of the
	// entry only they come from are not read (Mapper.Need).
	Needed map[string]bool
}

// Extensions lists what the extended mapping adds to Mixer's bag, for
// docs and logs. Each fills an attribute Mixer left absent, except
// response.time, whose seconds Mixer drops.
var Extensions = []string{
	"response.time: start_time + time_to_first_upstream_rx_byte, seconds included (Mixer adds only its nanos)",
	"response.duration: time_to_last_downstream_tx_byte, else common_properties.duration",
	"request.size, request.total_size: request_body_bytes, + request_headers_bytes",
	"request.id, request.referer: request_id, referer (when not empty)",
	"upstream.ip, upstream.port: upstream_remote_address; upstream.cluster: upstream_cluster",
	"route.name: route_name (when not empty)",
	"destination.service.host/name/namespace: the 4th |-part of upstream_cluster, else request.host; name and namespace its first two labels",
	"source/destination.workload.name, .namespace, source/destination.name, .namespace, .owner: Istio peer metadata logged as filter state (downstream_peer / upstream_peer, with or without the wasm. prefix) in google.protobuf.Struct form",
	"any string attribute from a request header named in the config (HeaderAttributes)",
}

// Mapper maps entries to bags of one layout. It is immutable and safe for
// concurrent use; each goroutine builds with its own Builder.
type Mapper struct {
	layout  *expr.Layout
	opts    Options
	s       slots
	headers []headerSlot
}

type headerSlot struct {
	header string
	slot   int
}

// slots are the layout slots of every attribute the mapping sets; -1 when
// the layout does not declare it.
type slots struct {
	contextProtocol, contextTime, reporterKind, reporterUID, proxyErrorCode           int
	requestTime, responseTime, requestHost, requestMethod, requestPath, requestScheme int
	requestUserAgent, requestHeaders, responseHeaders, responseCode, responseSize     int
	responseTotalSize, receivedBytes, sentBytes, destinationIP, destinationPort       int
	sourceIP, sourcePort, destinationPrincipal, sourcePrincipal, requestedServerName  int
	responseDuration, requestSize, requestTotalSize, requestID, requestReferer        int
	upstreamIP, upstreamPort, upstreamCluster, routeName                              int
	serviceHost, serviceName, serviceNamespace                                        int
	peer                                                                              [2]peerSlots // source, destination
}

type peerSlots struct {
	workloadName, workloadNamespace, name, namespace, owner int
}

// New resolves the attributes of the mapping in l. An attribute l declares
// with another type than the mapping gives it is an error (a manifest that
// redefines request.size as a STRING, say).
func New(l *expr.Layout, o Options) (*Mapper, error) {
	m := &Mapper{layout: l, opts: o}
	var errs []string
	slot := func(name string, t expr.ValueType) int {
		s, ok := l.Slot(name)
		if !ok || (o.Needed != nil && !o.Needed[name]) {
			return -1
		}
		// A string may fill any string-like attribute a manifest declares.
		stringLike := got(l, s) == expr.DNSName || got(l, s) == expr.URI || got(l, s) == expr.EmailAddress
		if g := got(l, s); g != t && (t != expr.String || !stringLike) {
			errs = append(errs, fmt.Sprintf("attribute %s is %s in the attribute manifests; the access-log mapping gives it %s", name, g, t))
			return -1
		}
		return s
	}
	s := &m.s
	str, i64, ts, ip, sm, dur := expr.String, expr.Int64, expr.Timestamp, expr.IPAddress, expr.StringMap, expr.Duration
	s.contextProtocol, s.contextTime = slot("context.protocol", str), slot("context.time", ts)
	s.reporterKind, s.reporterUID = slot("context.reporter.kind", str), slot("context.reporter.uid", str)
	s.proxyErrorCode = slot("context.proxy_error_code", str)
	s.requestTime, s.responseTime = slot("request.time", ts), slot("response.time", ts)
	s.requestHost, s.requestMethod, s.requestPath = slot("request.host", str), slot("request.method", str), slot("request.path", str)
	s.requestScheme, s.requestUserAgent = slot("request.scheme", str), slot("request.useragent", str)
	s.requestHeaders, s.responseHeaders = slot("request.headers", sm), slot("response.headers", sm)
	s.responseCode, s.responseSize, s.responseTotalSize = slot("response.code", i64), slot("response.size", i64), slot("response.total_size", i64)
	s.receivedBytes, s.sentBytes = slot("connection.received.bytes", i64), slot("connection.sent.bytes", i64)
	s.destinationIP, s.destinationPort = slot("destination.ip", ip), slot("destination.port", i64)
	s.sourceIP, s.sourcePort = slot("source.ip", ip), slot("source.port", i64)
	s.destinationPrincipal, s.sourcePrincipal = slot("destination.principal", str), slot("source.principal", str)
	s.requestedServerName = slot("connection.requested_server_name", str)
	s.responseDuration = slot("response.duration", dur)
	s.requestSize, s.requestTotalSize = slot("request.size", i64), slot("request.total_size", i64)
	s.requestID, s.requestReferer = slot("request.id", str), slot("request.referer", str)
	s.upstreamIP, s.upstreamPort = slot(AttrUpstreamIP, ip), slot(AttrUpstreamPort, i64)
	s.upstreamCluster, s.routeName = slot(AttrUpstreamCluster, str), slot(AttrRouteName, str)
	s.serviceHost, s.serviceName = slot("destination.service.host", str), slot("destination.service.name", str)
	s.serviceNamespace = slot("destination.service.namespace", str)
	for i, side := range []string{"source", "destination"} {
		p := &s.peer[i]
		p.workloadName, p.workloadNamespace = slot(side+".workload.name", str), slot(side+".workload.namespace", str)
		p.name, p.namespace, p.owner = slot(side+".name", str), slot(side+".namespace", str), slot(side+".owner", str)
	}
	headers := make([]string, 0, len(o.HeaderAttributes))
	for h := range o.HeaderAttributes {
		headers = append(headers, h)
	}
	sort.Strings(headers)
	for _, h := range headers {
		name := o.HeaderAttributes[h]
		sl, ok := l.Slot(name)
		switch {
		case h == "" || strings.ToLower(h) != h:
			errs = append(errs, fmt.Sprintf("header %q: Envoy logs header names in lower case", h))
		case !ok:
			errs = append(errs, fmt.Sprintf("header %s: attribute %s is declared by no attribute manifest", h, name))
		case l.Type(sl) != expr.String:
			errs = append(errs, fmt.Sprintf("header %s: attribute %s is %s; a header can fill only a STRING attribute", h, name, l.Type(sl)))
		default:
			m.headers = append(m.headers, headerSlot{header: h, slot: sl})
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("access-log attribute mapping: %s", strings.Join(errs, "; "))
	}
	return m, nil
}

// Need is what the reader must decode of each entry for this mapping.
func (m *Mapper) Need() logentry.Need {
	s := &m.s
	var n logentry.Need
	anySet := func(slots ...int) bool {
		for _, sl := range slots {
			if sl >= 0 {
				return true
			}
		}
		return false
	}
	if anySet(s.destinationIP, s.destinationPort, s.sourceIP, s.sourcePort, s.upstreamIP, s.upstreamPort) {
		n |= logentry.NeedAddresses
	}
	if anySet(s.requestTime, s.responseTime, s.contextTime, s.responseDuration) {
		n |= logentry.NeedTimes
	}
	if anySet(s.destinationPrincipal, s.sourcePrincipal, s.requestedServerName) {
		n |= logentry.NeedTLS
	}
	if anySet(s.proxyErrorCode) {
		n |= logentry.NeedResponseFlags
	}
	if anySet(s.requestHeaders, s.contextProtocol) || len(m.headers) > 0 {
		n |= logentry.NeedRequestHeaders
	}
	if anySet(s.responseHeaders) {
		n |= logentry.NeedResponseHeaders
	}
	for _, p := range s.peer {
		if anySet(p.workloadName, p.workloadNamespace, p.name, p.namespace, p.owner) {
			n |= logentry.NeedFilterState
		}
	}
	return n
}

func got(l *expr.Layout, slot int) expr.ValueType { return l.Type(slot) }

// Layout is the layout bags are built in.
func (m *Mapper) Layout() *expr.Layout { return m.layout }

// Builder builds bags of one Mapper into one Record, reusing its storage.
// The bag is valid until the next Build and while the entry's message is.
type Builder struct {
	m      *Mapper
	Record *expr.Record
	ips    [3][16]byte
	flags  []byte
}

// NewBuilder makes a builder with its own record.
func (m *Mapper) NewBuilder() *Builder {
	return &Builder{m: m, Record: expr.NewRecord(m.layout), flags: make([]byte, 0, 64)}
}

// view is b as a string without copying: the bag's strings point into the
// received message, which outlives the bag.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (b *Builder) setString(slot int, s string) {
	if slot >= 0 {
		b.Record.SetString(slot, s)
	}
}

func (b *Builder) setInt(slot int, i int64) {
	if slot >= 0 {
		b.Record.SetInt(slot, i)
	}
}

func (b *Builder) setTime(slot int, t logentry.Time, plusNanos int64) {
	if slot >= 0 {
		b.Record.SetTime(slot, t.Seconds, int64(t.Nanos)+plusNanos)
	}
}

func (b *Builder) setMap(slot int, kvs []logentry.KV) {
	if slot < 0 {
		return
	}
	m := b.Record.MapSlot(slot)
	for _, kv := range kvs {
		*m = append(*m, expr.KV{Key: view(kv.Key), Value: view(kv.Value)})
	}
}

// setAddress fills <ip> and <port> from a socket address as Mixer's
// fillAddress does: the 16-byte form of the IP, nil when it does not parse.
func (b *Builder) setAddress(ipSlot, portSlot int, a *logentry.Address, buf *[16]byte) {
	if !a.Socket {
		return
	}
	if ipSlot >= 0 {
		var ip []byte
		if addr, err := netip.ParseAddr(view(a.IP)); err == nil && addr.Zone() == "" {
			*buf = addr.As16()
			ip = buf[:]
		}
		b.Record.SetIP(ipSlot, ip)
	}
	b.setInt(portSlot, int64(a.Port))
}

// Build resets the record and fills it from e.
func (b *Builder) Build(e *logentry.Entry) {
	b.Record.Reset()
	s := &b.m.s
	if e.Protocol == logentry.ProtocolTCP {
		b.setString(s.contextProtocol, "tcp")
		if e.StartTime.Present {
			b.setTime(s.contextTime, e.StartTime, 0)
		}
		if e.Connection {
			b.setInt(s.receivedBytes, int64(e.ReceivedBytes))
			b.setInt(s.sentBytes, int64(e.SentBytes))
		}
	} else {
		b.buildHTTP(e)
	}
	b.setString(s.reporterKind, "inbound")
	b.setAddress(s.destinationIP, s.destinationPort, &e.DownstreamLocalAddress, &b.ips[0])
	b.setAddress(s.sourceIP, s.sourcePort, &e.DownstreamDirectRemote, &b.ips[1])
	if e.ResponseFlags.Present {
		b.setString(s.proxyErrorCode, b.flagCodes(&e.ResponseFlags))
	} else {
		b.setString(s.proxyErrorCode, "-")
	}
	if t := &e.TLS; t.Present {
		if t.Local.SANs > 0 {
			b.setString(s.destinationPrincipal, principal(&t.Local))
		}
		if t.Peer.SANs > 0 {
			b.setString(s.sourcePrincipal, principal(&t.Peer))
		}
		b.setString(s.requestedServerName, view(t.SNI))
	}
	b.setString(s.reporterUID, ReporterUID)
	if !b.m.opts.MixerExact {
		b.extend(e)
	}
}

func (b *Builder) buildHTTP(e *logentry.Entry) {
	s := &b.m.s
	protocol := "http"
	if e.StartTime.Present {
		b.setTime(s.requestTime, e.StartTime, 0)
		if ttfb := e.TimeToFirstUpstreamRxByte; ttfb.Present {
			// Mixer's reformatTime adds only the nanos of the duration.
			extra := int64(ttfb.Nanos)
			if !b.m.opts.MixerExact {
				extra += ttfb.Seconds * 1e9
			}
			b.setTime(s.responseTime, e.StartTime, extra)
		}
	}
	if r := &e.Request; r.Present {
		b.setString(s.requestHost, view(r.Authority))
		b.setString(s.requestMethod, methodName(r.Method))
		b.setString(s.requestPath, view(r.Path))
		b.setString(s.requestScheme, view(r.Scheme))
		b.setString(s.requestUserAgent, view(r.UserAgent))
		// Generated code leaves an entry-less map nil, which Mixer skips.
		if len(r.Headers) > 0 {
			b.setMap(s.requestHeaders, r.Headers)
			if ct, ok := lastValue(r.Headers, "content-type"); ok && strings.HasPrefix(ct, "application/grpc") {
				protocol = "grpc"
			}
		}
	}
	b.setString(s.contextProtocol, protocol)
	if r := &e.Response; r.Present {
		b.setMap(s.responseHeaders, r.Headers)
		b.setInt(s.responseCode, int64(r.Code))
		b.setInt(s.responseSize, int64(r.BodyBytes))
		b.setInt(s.responseTotalSize, int64(r.BodyBytes)+int64(r.HeadersBytes))
	}
}

func lastValue(kvs []logentry.KV, key string) (string, bool) {
	for i := len(kvs) - 1; i >= 0; i-- {
		if view(kvs[i].Key) == key {
			return view(kvs[i].Value), true
		}
	}
	return "", false
}

// methodNames are envoy.config.core.v3.RequestMethod's value names.
var methodNames = [...]string{"METHOD_UNSPECIFIED", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// methodName is the enum's String(): its name, or its number for a value
// the enum does not define.
func methodName(m int32) string {
	if m >= 0 && int(m) < len(methodNames) {
		return methodNames[m]
	}
	return fmt.Sprint(m) // an unknown method: rare, and it allocates
}

// principal is Mixer's stripPrincipal of the first SAN taken as a URI: a
// DNS SAN gives "".
func principal(c *logentry.Certificate) string {
	if !c.FirstURI {
		return ""
	}
	return strings.TrimPrefix(view(c.FirstSAN), "spiffe://")
}

// flagOrder is Mixer's ParseEnvoyResponseFlags: field numbers in the order
// it tests them, with their codes (13, unauthorized_details, is a message).
var flagOrder = [...]struct {
	field int
	code  string
}{
	{1, "LH"}, {2, "UH"}, {3, "UT"}, {4, "LR"}, {5, "UR"}, {6, "UF"}, {7, "UC"}, {8, "UO"}, {9, "NR"}, {10, "DI"}, {11, "FI"},
	{12, "RL"}, {13, "UAEX"}, {14, "RLSE"}, {15, "DC"}, {16, "URX"}, {17, "SI"}, {18, "IH"}, {19, "DPE"},
}

// flagCodes joins the set flags' codes with "," in Mixer's order, "-" when
// none is set. The string lives in the builder's buffer.
func (b *Builder) flagCodes(f *logentry.ResponseFlags) string {
	if f.Bits&^(1<<(13-1)) == 0 && !f.Unauthorized {
		return "-" // most entries: no flag, no walk through the table
	}
	out := b.flags[:0]
	for _, fl := range flagOrder {
		set := f.Has(fl.field)
		if fl.field == 13 {
			set = f.Unauthorized
		}
		if !set {
			continue
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(out, fl.code...)
	}
	b.flags = out
	if len(out) == 0 {
		return "-"
	}
	return view(out)
}

// extend fills what Mixer's shim left absent (Extensions).
func (b *Builder) extend(e *logentry.Entry) {
	s := &b.m.s
	r := b.Record
	if e.Protocol != logentry.ProtocolTCP {
		if d := e.TimeToLastDownstreamTxByte; d.Present {
			b.setDuration(s.responseDuration, d)
		} else if d := e.Duration; d.Present {
			b.setDuration(s.responseDuration, d)
		}
		if q := &e.Request; q.Present {
			b.setInt(s.requestSize, int64(q.BodyBytes))
			b.setInt(s.requestTotalSize, int64(q.BodyBytes)+int64(q.HeadersBytes))
			if len(q.RequestID) > 0 {
				b.setString(s.requestID, view(q.RequestID))
			}
			if len(q.Referer) > 0 {
				b.setString(s.requestReferer, view(q.Referer))
			}
			for _, h := range b.m.headers {
				if v, ok := lastValue(q.Headers, h.header); ok {
					r.SetString(h.slot, v)
				}
			}
		}
	}
	b.setAddress(s.upstreamIP, s.upstreamPort, &e.UpstreamRemoteAddress, &b.ips[2])
	if len(e.UpstreamCluster) > 0 {
		b.setString(s.upstreamCluster, view(e.UpstreamCluster))
	}
	if len(e.RouteName) > 0 {
		b.setString(s.routeName, view(e.RouteName))
	}
	b.service(e)
	for i := range e.FilterState {
		b.peerMetadata(&e.FilterState[i])
	}
}

func (b *Builder) setDuration(slot int, t logentry.Time) {
	if slot >= 0 {
		b.Record.SetDuration(slot, durationOf(t))
	}
}

func durationOf(t logentry.Time) time.Duration {
	return time.Duration(t.Seconds*1e9 + int64(t.Nanos))
}

// service fills destination.service.* as Mixer does once kubernetesenv has
// run (AddNamespaceDependentAttributes), taking the namespace from the host
// itself: the host is the 4th |-part of upstream_cluster
// (outbound|9080||reviews.default.svc.cluster.local), else request.host;
// the name is its first label, the namespace its second.
func (b *Builder) service(e *logentry.Entry) {
	s := &b.m.s
	host := ""
	if c := view(e.UpstreamCluster); c != "" {
		// strings.Count and LastIndexByte: vectorised, where a loop over
		// the name's bytes cost 3% of the CPU per entry.
		if strings.Count(c, "|") == 3 {
			host = c[strings.LastIndexByte(c, '|')+1:]
		}
	}
	if host == "" && e.Request.Present {
		host = view(e.Request.Authority)
	}
	if host == "" {
		return
	}
	b.setString(s.serviceHost, host)
	end := indexDotOrColon(host)
	if end < 0 {
		b.setString(s.serviceName, host)
		return
	}
	b.setString(s.serviceName, host[:end])
	if host[end] == ':' {
		return
	}
	rest := host[end+1:]
	if nsEnd := indexDotOrColon(rest); nsEnd >= 0 {
		rest = rest[:nsEnd]
	}
	if rest != "" {
		b.setString(s.serviceNamespace, rest)
	}
}

// indexDotOrColon is strings.IndexAny(s, ".:") without building the set
// on every call.
func indexDotOrColon(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' || s[i] == ':' {
			return i
		}
	}
	return -1
}
