// Command gendoc writes the handler params reference (docs/params.md) from
// the comments of config/config.proto, read from its descriptor set (built
// with --include_source_info), so that the reference cannot drift from the
// proto. `make generate` runs it; CI checks the output is committed.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"

	"github.com/meshmetrics/meshmetrics/config"
)

func main() {
	in := flag.String("descriptor", "config/config.proto_descriptor", "FileDescriptorSet with source info")
	out := flag.String("out", "docs/params.md", "output file")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gendoc:", err)
		os.Exit(1)
	}
}

// defaults documents the default of each field that has one, from config/.
var defaults = map[string]string{
	"Params.MetricInfo.namespace":                                   fmt.Sprintf("`%s`", config.DefaultNamespace),
	"Params.MetricInfo.name":                                        "the instance_name",
	"Params.MetricInfo.description":                                 "the name",
	"Params.MetricInfo.buckets":                                     fmt.Sprintf("`%v`", config.DefaultBuckets),
	"Params.MetricInfo.duration_unit":                               "`SECONDS` (Prometheus), `MILLISECONDS` (Librato)",
	"Params.MetricsExpirationPolicy.expiry_check_interval_duration": "half the expiry",
	"LibratoParams.url":                                             "`" + config.DefaultLibratoURL + "`",
	"LibratoParams.period":                                          "`" + config.DefaultLibratoPeriod.String() + "`",
	"LibratoParams.source":                                          "the replica name",
	"LibratoParams.max_measurements_per_request":                    fmt.Sprintf("`%d` (tagged), `%d` (legacy)", config.MaxLibratoMeasurementsTagged, config.MaxLibratoMeasurementsLegacy),
	"LibratoParams.max_request_bytes":                               fmt.Sprintf("`%d`", config.DefaultLibratoMaxRequestBytes),
	"LibratoParams.queue_size":                                      fmt.Sprintf("`%d`", config.DefaultLibratoQueueSize),
	"LibratoParams.request_timeout":                                 "`" + config.DefaultLibratoRequestTimeout.String() + "`",
	"LibratoParams.max_retry_elapsed":                               "`" + config.DefaultLibratoMaxRetryElapsed.String() + "`",
	"RemoteWrite.interval":                                          "`" + config.DefaultRemoteWriteInterval.String() + "`",
	"RemoteWrite.max_samples_per_send":                              fmt.Sprintf("`%d`", config.DefaultRemoteWriteMaxSamples),
	"RemoteWrite.capacity":                                          fmt.Sprintf("`%d`", config.DefaultRemoteWriteCapacity),
	"RemoteWrite.timeout":                                           "`" + config.DefaultRemoteWriteTimeout.String() + "`",
	"RemoteWrite.min_backoff":                                       "`" + config.DefaultRemoteWriteMinBackoff.String() + "`",
	"RemoteWrite.max_backoff":                                       "`" + config.DefaultRemoteWriteMaxBackoff.String() + "`",
	"RemoteWrite.max_retry_elapsed":                                 "`" + config.DefaultRemoteWriteMaxRetryElapse.String() + "`",
	"OtlpParams.protocol":                                           "`" + config.DefaultOtlpProtocol + "`",
	"OtlpParams.compression":                                        "`GZIP`",
	"OtlpParams.interval":                                           "`" + config.DefaultOtlpInterval.String() + "`",
	"OtlpParams.temporality":                                        "`CUMULATIVE`",
	"OtlpParams.resource_attributes":                                "`service.name: " + config.DefaultOtlpServiceName + "`",
	"OtlpParams.max_data_points_per_request":                        fmt.Sprintf("`%d`", config.DefaultOtlpMaxDataPoints),
	"OtlpParams.max_request_bytes":                                  fmt.Sprintf("`%d`", config.DefaultOtlpMaxRequestBytes),
	"OtlpParams.queue_size":                                         fmt.Sprintf("`%d`", config.DefaultOtlpQueueSize),
	"OtlpParams.timeout":                                            "`" + config.DefaultOtlpTimeout.String() + "`",
	"OtlpParams.min_backoff":                                        "`" + config.DefaultOtlpMinBackoff.String() + "`",
	"OtlpParams.max_backoff":                                        "`" + config.DefaultOtlpMaxBackoff.String() + "`",
	"OtlpParams.max_retry_elapsed":                                  "`" + config.DefaultOtlpMaxRetryElapsed.String() + "`",
	"Limits.max_series_per_metric":                                  fmt.Sprintf("`%d`", config.DefaultMaxSeriesPerMetric),
	"Limits.max_label_value_length":                                 fmt.Sprintf("`%d`", config.DefaultMaxLabelValueLength),
}

func run(in, out string) error {
	raw, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var set descriptor.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		return err
	}
	var file *descriptor.FileDescriptorProto
	for _, f := range set.File {
		if f.GetPackage() == "adapter.meshmetrics.config" {
			file = f
		}
	}
	if file == nil {
		return fmt.Errorf("%s has no adapter.meshmetrics.config file", in)
	}
	comments := map[string]string{}
	for _, loc := range file.GetSourceCodeInfo().GetLocation() {
		if c := cleanComment(loc.GetLeadingComments()); c != "" {
			comments[pathKey(loc.Path)] = c
		}
	}
	var b bytes.Buffer
	b.WriteString("<!-- Generated by `make generate` from config/config.proto. Do not edit. -->\n")
	b.WriteString("# Handler params reference\n\n")
	b.WriteString("The `params` of a `handler` whose `adapter` is `meshmetrics`, message `adapter.meshmetrics.config.Params`. ")
	b.WriteString("Keys may be written as below (snake_case) or in lowerCamelCase, as with every Mixer adapter; ")
	b.WriteString("durations take Go duration strings (`90s`, `5m`), enums their names.\n\n")
	b.WriteString(comments[pathKey([]int32{4, 0})] + "\n\n")
	for mi, m := range file.MessageType {
		writeMessage(&b, m, m.GetName(), []int32{4, int32(mi)}, comments)
	}
	for ei, e := range file.EnumType {
		writeEnum(&b, e, e.GetName(), []int32{5, int32(ei)}, comments)
	}
	return os.WriteFile(out, b.Bytes(), 0o644)
}

func writeMessage(b *bytes.Buffer, m *descriptor.DescriptorProto, name string, path []int32, comments map[string]string) {
	fmt.Fprintf(b, "## %s\n\n", name)
	if c := comments[pathKey(path)]; c != "" && name != "Params" {
		b.WriteString(c + "\n\n")
	}
	b.WriteString("| Field | Type | Default | Description |\n|---|---|---|---|\n")
	for fi, f := range m.Field {
		desc := oneLine(comments[pathKey(append(append([]int32{}, path...), 2, int32(fi)))])
		def := defaults[name+"."+f.GetName()]
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", f.GetName(), typeName(f), def, desc)
	}
	b.WriteString("\n")
	for ni, n := range m.NestedType {
		if n.GetOptions().GetMapEntry() {
			continue
		}
		writeMessage(b, n, name+"."+n.GetName(), append(append([]int32{}, path...), 3, int32(ni)), comments)
	}
	for ei, e := range m.EnumType {
		writeEnum(b, e, name+"."+e.GetName(), append(append([]int32{}, path...), 4, int32(ei)), comments)
	}
}

func writeEnum(b *bytes.Buffer, e *descriptor.EnumDescriptorProto, name string, path []int32, comments map[string]string) {
	fmt.Fprintf(b, "## %s (enum)\n\n", name)
	if c := comments[pathKey(path)]; c != "" {
		b.WriteString(c + "\n\n")
	}
	b.WriteString("| Value | Description |\n|---|---|\n")
	for vi, v := range e.Value {
		fmt.Fprintf(b, "| `%s` | %s |\n", v.GetName(), oneLine(comments[pathKey(append(append([]int32{}, path...), 2, int32(vi)))]))
	}
	b.WriteString("\n")
}

func typeName(f *descriptor.FieldDescriptorProto) string {
	t := strings.TrimPrefix(f.GetTypeName(), ".adapter.meshmetrics.config.")
	switch f.GetType() {
	case descriptor.FieldDescriptorProto_TYPE_MESSAGE, descriptor.FieldDescriptorProto_TYPE_ENUM:
		if t == ".google.protobuf.Duration" {
			t = "duration"
		}
		if strings.HasSuffix(t, "Entry") {
			return "map&lt;string, string&gt;"
		}
	default:
		t = strings.ToLower(strings.TrimPrefix(f.GetType().String(), "TYPE_"))
	}
	if f.GetLabel() == descriptor.FieldDescriptorProto_LABEL_REPEATED {
		return "repeated " + t
	}
	return t
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", "\\|")
}

func pathKey(p []int32) string {
	parts := make([]string, len(p))
	for i, x := range p {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ".")
}

// cleanComment drops the space protoc keeps after each "//".
func cleanComment(c string) string {
	lines := strings.Split(strings.TrimSpace(c), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, " ")
	}
	return strings.Join(lines, "\n")
}
