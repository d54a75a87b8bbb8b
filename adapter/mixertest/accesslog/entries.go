package accesslog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Entry is one access-log entry: HTTP or TCP, as go-control-plane's types
// hold it, with where it was written (File:Line) when it comes from a file.
type Entry struct {
	HTTP *alsdata.HTTPAccessLogEntry
	TCP  *alsdata.TCPAccessLogEntry
	File string
	Line int
}

// HTTP wraps HTTP entries built in Go.
func HTTP(entries ...*alsdata.HTTPAccessLogEntry) []Entry {
	out := make([]Entry, len(entries))
	for i, e := range entries {
		out[i] = Entry{HTTP: e}
	}
	return out
}

// TCP wraps TCP entries built in Go.
func TCP(entries ...*alsdata.TCPAccessLogEntry) []Entry {
	out := make([]Entry, len(entries))
	for i, e := range entries {
		out[i] = Entry{TCP: e}
	}
	return out
}

// Messages groups entries into StreamAccessLogsMessages as Envoy's buffer
// does: consecutive entries of one protocol, at most perMessage each (all of
// them when perMessage <= 0). id, when set, goes in the first message only.
func Messages(id *alsv3.StreamAccessLogsMessage_Identifier, entries []Entry, perMessage int) []*alsv3.StreamAccessLogsMessage {
	var out []*alsv3.StreamAccessLogsMessage
	var cur *alsv3.StreamAccessLogsMessage
	n := 0
	for _, e := range entries {
		full := perMessage > 0 && n >= perMessage
		switch {
		case e.HTTP != nil:
			if cur == nil || cur.GetHttpLogs() == nil || full {
				cur = HTTPMessage(nil)
				out, n = append(out, cur), 0
			}
			cur.GetHttpLogs().LogEntry = append(cur.GetHttpLogs().LogEntry, e.HTTP)
		case e.TCP != nil:
			if cur == nil || cur.GetTcpLogs() == nil || full {
				cur = TCPMessage(nil)
				out, n = append(out, cur), 0
			}
			cur.GetTcpLogs().LogEntry = append(cur.GetTcpLogs().LogEntry, e.TCP)
		default:
			continue
		}
		n++
	}
	if len(out) > 0 {
		out[0].Identifier = id
	}
	return out
}

// Identifier is the identifier Envoy sends first on a stream: its node and
// the access log's name (log_name of the access logger's config).
func Identifier(nodeID, cluster, logName string) *alsv3.StreamAccessLogsMessage_Identifier {
	return &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: nodeID, Cluster: cluster}, LogName: logName}
}

// ReadEntries reads an entries file (see ParseEntries); start times left
// out are the time of reading.
func ReadEntries(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseEntries(path, data, time.Now())
}

// EntriesFormat describes the entries file, for help texts.
const EntriesFormat = `entries:                      # or a bare list of entries
- protocol: http              # http (default) or tcp
  method: GET                 # GET (default), POST, ... (Envoy's RequestMethod names)
  path: /v1/damage?analytic=1 # default /
  authority: reviews:9080     # scheme (default http), user_agent, referer, request_id too
  code: 200                   # the response code (default 200)
  request_headers: {x-user: alice}   # only the headers Envoy is told to log
  response_headers: {content-type: text/plain}
  request_body_bytes: 10      # request_headers_bytes, response_body_bytes, response_headers_bytes
  source: 10.1.0.7:45678      # downstream (direct) remote address
  destination: 10.1.2.3:9080  # downstream local address
  upstream: 127.0.0.1:9080    # upstream remote address
  upstream_cluster: inbound|9080|http|reviews.default.svc.cluster.local
  route_name: default
  start_time: 2024-05-01T10:00:00Z   # default: when the file is read
  duration: 12ms              # time to the last byte sent downstream
  time_to_first_upstream_rx_byte: 10ms
  response_flags: [UO]        # Envoy's short codes: UH, UF, UO, NR, UAEX, DC, ...
  tls: {sni: outbound_.9080_._.reviews.default.svc.cluster.local,
        local_san: spiffe://cluster.local/ns/default/sa/reviews,
        peer_san: spiffe://cluster.local/ns/default/sa/productpage}
  source_peer: {WORKLOAD_NAME: productpage-v1, NAMESPACE: default}       # filter state downstream_peer
  destination_peer: {WORKLOAD_NAME: reviews-v2, NAMESPACE: default}      # filter state upstream_peer
  repeat: 3                   # this entry 3 times
- protocol: tcp
  sent_bytes: 1024
  received_bytes: 128
  upstream_cluster: outbound|3306||mysql.db.svc.cluster.local
defaults: {destination: 10.1.2.3:9080}   # optional: keys every entry starts from (HTTP ones only HTTP entries)`

// ParseEntries reads an entries file (YAML or JSON, EntriesFormat): a list
// of entries, or a mapping with `entries` and optional `defaults`. A field
// left out is one Envoy leaves unset, except the start time (now), and for
// HTTP the method (GET), scheme (http), path (/) and response code (200),
// and the response flags (none set, so context.proxy_error_code is "-").
// Every problem is reported with name:line.
func ParseEntries(name string, data []byte, now time.Time) ([]Entry, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no entries", name)
		}
		return nil, fmt.Errorf("%s: invalid YAML: %w", name, err)
	}
	root := doc.Content[0]
	var defaults *yaml.Node
	if root.Kind == yaml.MappingNode {
		var list *yaml.Node
		for i := 0; i+1 < len(root.Content); i += 2 {
			switch k := root.Content[i]; k.Value {
			case "entries":
				list = root.Content[i+1]
			case "defaults":
				defaults = root.Content[i+1]
				if defaults.Kind != yaml.MappingNode {
					return nil, fmt.Errorf("%s:%d: defaults: want a mapping", name, defaults.Line)
				}
			default:
				return nil, fmt.Errorf("%s:%d: unknown key %q (want entries, defaults)", name, k.Line, k.Value)
			}
		}
		if list == nil {
			return nil, fmt.Errorf("%s: no entries", name)
		}
		root = list
	}
	if root.Kind != yaml.SequenceNode || len(root.Content) == 0 {
		return nil, fmt.Errorf("%s:%d: want a list of entries", name, root.Line)
	}
	var out []Entry
	var errs []error
	for _, n := range root.Content {
		entries, err := parseEntry(n, defaults, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%w", name, err))
			continue
		}
		for i := range entries {
			entries[i].File = name
		}
		out = append(out, entries...)
	}
	return out, errors.Join(errs...)
}

// field is one key of an entry with its value node; fromDefaults when the
// defaults gave it.
type field struct {
	key, value   *yaml.Node
	fromDefaults bool
}

var (
	commonKeys = []string{"protocol", "repeat", "start_time", "duration", "time_to_first_upstream_rx_byte", "source", "destination",
		"upstream", "upstream_cluster", "route_name", "response_flags", "tls", "source_peer", "destination_peer"}
	httpKeys = []string{"method", "scheme", "authority", "path", "user_agent", "referer", "request_id", "request_headers",
		"request_body_bytes", "request_headers_bytes", "code", "response_headers", "response_body_bytes", "response_headers_bytes",
		"response_code_details"}
	tcpKeys = []string{"sent_bytes", "received_bytes"}
)

func parseEntry(n, defaults *yaml.Node, now time.Time) ([]Entry, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%d: an entry must be a mapping", n.Line)
	}
	// The entry's keys override the defaults' keys.
	fields := map[string]field{}
	var order []string
	for _, m := range []*yaml.Node{defaults, n} {
		if m == nil {
			continue
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			k := m.Content[i]
			if _, seen := fields[k.Value]; !seen {
				order = append(order, k.Value)
			}
			fields[k.Value] = field{k, m.Content[i+1], m == defaults}
		}
	}
	protocol := "http"
	if f, ok := fields["protocol"]; ok {
		protocol = f.value.Value
		if protocol != "http" && protocol != "tcp" {
			return nil, fmt.Errorf("%d: protocol: want http or tcp, got %q", f.key.Line, protocol)
		}
	}
	common := &alsdata.AccessLogCommon{StartTime: timestamppb.New(now), ResponseFlags: &alsdata.ResponseFlags{}}
	var req *alsdata.HTTPRequestProperties
	var resp *alsdata.HTTPResponseProperties
	var conn *alsdata.ConnectionProperties
	if protocol == "http" {
		req = &alsdata.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_GET, Scheme: "http", Path: "/"}
		resp = &alsdata.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)}
	} else {
		conn = &alsdata.ConnectionProperties{}
	}
	repeat := 1
	for _, key := range order {
		f := fields[key]
		var err error
		switch {
		case slices.Contains(commonKeys, key):
			err = setCommon(common, key, f.value, &repeat)
		case f.fromDefaults && (slices.Contains(httpKeys, key) && protocol != "http" || slices.Contains(tcpKeys, key) && protocol != "tcp"):
			// A default of the other protocol's entries.
		case slices.Contains(httpKeys, key):
			if protocol != "http" {
				err = fmt.Errorf("a %s entry has no %s (an HTTP field)", protocol, key)
				break
			}
			err = setHTTP(req, resp, key, f.value)
		case slices.Contains(tcpKeys, key):
			if protocol != "tcp" {
				err = fmt.Errorf("an %s entry has no %s (a TCP field: set protocol: tcp)", protocol, key)
				break
			}
			var v uint64
			if v, err = uintValue(f.value); err == nil {
				if key == "sent_bytes" {
					conn.SentBytes = v
				} else {
					conn.ReceivedBytes = v
				}
			}
		default:
			err = fmt.Errorf("unknown key %q (want one of %s)", key, strings.Join(slices.Concat(commonKeys, httpKeys, tcpKeys), ", "))
		}
		if err != nil {
			return nil, fmt.Errorf("%d: %s: %w", f.key.Line, key, err)
		}
	}
	first := Entry{Line: n.Line}
	if protocol == "http" {
		first.HTTP = &alsdata.HTTPAccessLogEntry{CommonProperties: common, ProtocolVersion: alsdata.HTTPAccessLogEntry_HTTP11,
			Request: req, Response: resp}
	} else {
		first.TCP = &alsdata.TCPAccessLogEntry{CommonProperties: common, ConnectionProperties: conn}
	}
	out := []Entry{first}
	for len(out) < repeat {
		c := first
		if c.HTTP != nil {
			c.HTTP = proto.Clone(first.HTTP).(*alsdata.HTTPAccessLogEntry)
		} else {
			c.TCP = proto.Clone(first.TCP).(*alsdata.TCPAccessLogEntry)
		}
		out = append(out, c)
	}
	return out, nil
}

func setCommon(c *alsdata.AccessLogCommon, key string, v *yaml.Node, repeat *int) error {
	var err error
	switch key {
	case "protocol":
	case "repeat":
		var n uint64
		if n, err = uintValue(v); err == nil {
			if n < 1 || n > 1_000_000 {
				return fmt.Errorf("want 1 to 1000000, got %d", n)
			}
			*repeat = int(n)
		}
	case "start_time":
		var t time.Time
		if t, err = time.Parse(time.RFC3339Nano, v.Value); err == nil {
			c.StartTime = timestamppb.New(t)
		}
	case "duration":
		var d time.Duration
		if d, err = durationValue(v); err == nil {
			c.TimeToLastDownstreamTxByte = durationpb.New(d)
			c.Duration = durationpb.New(d)
		}
	case "time_to_first_upstream_rx_byte":
		var d time.Duration
		if d, err = durationValue(v); err == nil {
			c.TimeToFirstUpstreamRxByte = durationpb.New(d)
		}
	case "source":
		var a *corev3.Address
		if a, err = addressValue(v); err == nil {
			c.DownstreamDirectRemoteAddress, c.DownstreamRemoteAddress = a, a
		}
	case "destination":
		c.DownstreamLocalAddress, err = addressValue(v)
	case "upstream":
		c.UpstreamRemoteAddress, err = addressValue(v)
	case "upstream_cluster":
		c.UpstreamCluster, err = stringValue(v)
	case "route_name":
		c.RouteName, err = stringValue(v)
	case "response_flags":
		c.ResponseFlags, err = flagsValue(v)
	case "tls":
		c.TlsProperties, err = tlsValue(v)
	case "source_peer", "destination_peer":
		var s *structpb.Struct
		if s, err = peerValue(v); err == nil {
			var a *anypb.Any
			if a, err = anypb.New(s); err == nil {
				if c.FilterStateObjects == nil {
					c.FilterStateObjects = map[string]*anypb.Any{}
				}
				c.FilterStateObjects[map[string]string{"source_peer": "downstream_peer", "destination_peer": "upstream_peer"}[key]] = a
			}
		}
	}
	return err
}

func setHTTP(req *alsdata.HTTPRequestProperties, resp *alsdata.HTTPResponseProperties, key string, v *yaml.Node) error {
	var err error
	switch key {
	case "method":
		m, ok := corev3.RequestMethod_value[strings.ToUpper(v.Value)]
		if !ok || m == 0 {
			return fmt.Errorf("unknown method %q", v.Value)
		}
		req.RequestMethod = corev3.RequestMethod(m)
	case "scheme":
		req.Scheme, err = stringValue(v)
	case "authority":
		req.Authority, err = stringValue(v)
	case "path":
		req.Path, err = stringValue(v)
	case "user_agent":
		req.UserAgent, err = stringValue(v)
	case "referer":
		req.Referer, err = stringValue(v)
	case "request_id":
		req.RequestId, err = stringValue(v)
	case "request_headers":
		req.RequestHeaders, err = mapValue(v)
	case "request_body_bytes":
		req.RequestBodyBytes, err = uintValue(v)
	case "request_headers_bytes":
		req.RequestHeadersBytes, err = uintValue(v)
	case "code":
		var c uint64
		if c, err = uintValue(v); err == nil {
			if c > 999 {
				return fmt.Errorf("%d is not an HTTP status code", c)
			}
			resp.ResponseCode = wrapperspb.UInt32(uint32(c))
		}
	case "response_headers":
		resp.ResponseHeaders, err = mapValue(v)
	case "response_body_bytes":
		resp.ResponseBodyBytes, err = uintValue(v)
	case "response_headers_bytes":
		resp.ResponseHeadersBytes, err = uintValue(v)
	case "response_code_details":
		resp.ResponseCodeDetails, err = stringValue(v)
	}
	return err
}

func stringValue(v *yaml.Node) (string, error) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		return "", errors.New("want a string")
	}
	return v.Value, nil
}

func uintValue(v *yaml.Node) (uint64, error) {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" {
		return 0, fmt.Errorf("want a whole number, got %q", v.Value)
	}
	n, err := strconv.ParseUint(v.Value, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("want a whole number >= 0, got %q", v.Value)
	}
	return n, nil
}

func durationValue(v *yaml.Node) (time.Duration, error) {
	d, err := time.ParseDuration(v.Value)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration such as 12ms, got %q", v.Value)
	}
	return d, nil
}

func addressValue(v *yaml.Node) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(v.Value)
	if err != nil {
		return nil, fmt.Errorf("want ip:port, got %q", v.Value)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("want ip:port, got %q", v.Value)
	}
	return SocketAddress(host, uint32(p)), nil
}

func mapValue(v *yaml.Node) (map[string]string, error) {
	if v.Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping")
	}
	out := map[string]string{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		if v.Content[i+1].Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s: want a string", v.Content[i].Value)
		}
		out[v.Content[i].Value] = v.Content[i+1].Value
	}
	return out, nil
}

// FlagCodes are Envoy's short codes of response flags (%RESPONSE_FLAGS%)
// with the ResponseFlags field each sets (UAEX: unauthorized_details).
func FlagCodes() map[string]string {
	return map[string]string{
		"LH": "failed_local_healthcheck", "UH": "no_healthy_upstream", "UT": "upstream_request_timeout", "LR": "local_reset",
		"UR": "upstream_remote_reset", "UF": "upstream_connection_failure", "UC": "upstream_connection_termination",
		"UO": "upstream_overflow", "NR": "no_route_found", "DI": "delay_injected", "FI": "fault_injected", "RL": "rate_limited",
		"UAEX": "unauthorized_details", "RLSE": "rate_limit_service_error", "DC": "downstream_connection_termination",
		"URX": "upstream_retry_limit_exceeded", "SI": "stream_idle_timeout", "IH": "invalid_envoy_request_headers",
		"DPE": "downstream_protocol_error", "UMSDR": "upstream_max_stream_duration_reached", "RFCF": "response_from_cache_filter",
		"NFCF": "no_filter_config_found", "DT": "duration_timeout", "UPE": "upstream_protocol_error", "NC": "no_cluster_found",
		"OM": "overload_manager", "DF": "dns_resolution_failure", "DR": "downstream_remote_reset",
	}
}

func flagsValue(v *yaml.Node) (*alsdata.ResponseFlags, error) {
	var codes []*yaml.Node
	switch v.Kind {
	case yaml.SequenceNode:
		codes = v.Content
	case yaml.ScalarNode:
		codes = []*yaml.Node{v}
	default:
		return nil, errors.New("want a list of Envoy's short codes, e.g. [UO, NR]")
	}
	f := &alsdata.ResponseFlags{}
	fields := f.ProtoReflect().Descriptor().Fields()
	for _, c := range codes {
		name, ok := FlagCodes()[c.Value]
		if !ok {
			known := make([]string, 0, len(FlagCodes()))
			for k := range FlagCodes() {
				known = append(known, k)
			}
			slices.Sort(known)
			return nil, fmt.Errorf("unknown code %q (want one of %s)", c.Value, strings.Join(known, ", "))
		}
		if c.Value == "UAEX" {
			f.UnauthorizedDetails = &alsdata.ResponseFlags_Unauthorized{Reason: alsdata.ResponseFlags_Unauthorized_EXTERNAL_SERVICE}
			continue
		}
		f.ProtoReflect().Set(fields.ByName(protoreflect.Name(name)), protoreflect.ValueOfBool(true))
	}
	return f, nil
}

func tlsValue(v *yaml.Node) (*alsdata.TLSProperties, error) {
	m, err := mapValue(v)
	if err != nil {
		return nil, err
	}
	t := &alsdata.TLSProperties{TlsVersion: alsdata.TLSProperties_TLSv1_3}
	for k, s := range m {
		switch k {
		case "sni":
			t.TlsSniHostname = s
		case "local_san":
			t.LocalCertificateProperties = sanProperties(s)
		case "peer_san":
			t.PeerCertificateProperties = sanProperties(s)
		default:
			return nil, fmt.Errorf("unknown key %q (want sni, local_san, peer_san)", k)
		}
	}
	return t, nil
}

// sanProperties is a certificate with one SAN: a URI, or a DNS name when
// written dns:<name>.
func sanProperties(s string) *alsdata.TLSProperties_CertificateProperties {
	san := &alsdata.TLSProperties_CertificateProperties_SubjectAltName{San: &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: s}}
	if dns, ok := strings.CutPrefix(s, "dns:"); ok {
		san.San = &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Dns{Dns: dns}
	}
	return &alsdata.TLSProperties_CertificateProperties{SubjectAltName: []*alsdata.TLSProperties_CertificateProperties_SubjectAltName{san}}
}

func peerValue(v *yaml.Node) (*structpb.Struct, error) {
	m, err := mapValue(v)
	if err != nil {
		return nil, err
	}
	fields := map[string]any{}
	for k, s := range m {
		fields[k] = s
	}
	return structpb.NewStruct(fields)
}

// Describe is one line saying what an entry holds, for printing what was
// sent.
func Describe(e Entry) string {
	var b strings.Builder
	var c *alsdata.AccessLogCommon
	if e.HTTP != nil {
		c = e.HTTP.GetCommonProperties()
		r, resp := e.HTTP.GetRequest(), e.HTTP.GetResponse()
		fmt.Fprintf(&b, "HTTP %s %s%s -> %d", r.GetRequestMethod(), r.GetAuthority(), r.GetPath(), resp.GetResponseCode().GetValue())
		if n := len(r.GetRequestHeaders()); n > 0 {
			fmt.Fprintf(&b, ", %d request header%s", n, plural(n))
		}
	} else {
		c = e.TCP.GetCommonProperties()
		p := e.TCP.GetConnectionProperties()
		fmt.Fprintf(&b, "TCP sent %d received %d bytes", p.GetSentBytes(), p.GetReceivedBytes())
	}
	addr := func(a *corev3.Address) string {
		s := a.GetSocketAddress()
		if s == nil {
			return "-"
		}
		return net.JoinHostPort(s.GetAddress(), strconv.Itoa(int(s.GetPortValue())))
	}
	fmt.Fprintf(&b, ", %s -> %s", addr(c.GetDownstreamDirectRemoteAddress()), addr(c.GetDownstreamLocalAddress()))
	if u := c.GetUpstreamCluster(); u != "" {
		fmt.Fprintf(&b, ", cluster %s", u)
	}
	if d := c.GetTimeToLastDownstreamTxByte(); d != nil {
		fmt.Fprintf(&b, ", %s", d.AsDuration())
	}
	var flags []string
	for code, name := range FlagCodes() {
		f := c.GetResponseFlags()
		if f == nil {
			break
		}
		if code == "UAEX" {
			if f.GetUnauthorizedDetails() != nil {
				flags = append(flags, code)
			}
			continue
		}
		if f.ProtoReflect().Get(f.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))).Bool() {
			flags = append(flags, code)
		}
	}
	if len(flags) > 0 {
		slices.Sort(flags)
		fmt.Fprintf(&b, ", flags %s", strings.Join(flags, ","))
	}
	for _, k := range []string{"downstream_peer", "upstream_peer"} {
		if a := c.GetFilterStateObjects()[k]; a != nil {
			var s structpb.Struct
			if a.UnmarshalTo(&s) == nil && s.GetFields()["WORKLOAD_NAME"].GetStringValue() != "" {
				fmt.Fprintf(&b, ", %s %s", k, s.GetFields()["WORKLOAD_NAME"].GetStringValue())
			}
		}
	}
	return b.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
