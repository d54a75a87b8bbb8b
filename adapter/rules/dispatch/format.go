package dispatch

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
)

// FormatValue renders a Value for people: the member's content and its name, e.g.
// `1 (int64)`, `"GET" (string)`, `10ms (duration)`.
func FormatValue(v *policypb.Value) string {
	if v == nil || v.Value == nil {
		return "<unset>"
	}
	switch x := v.Value.(type) {
	case *policypb.Value_StringValue:
		return strconv.Quote(x.StringValue) + " (string)"
	case *policypb.Value_Int64Value:
		return strconv.FormatInt(x.Int64Value, 10) + " (int64)"
	case *policypb.Value_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64) + " (double)"
	case *policypb.Value_BoolValue:
		return strconv.FormatBool(x.BoolValue) + " (bool)"
	case *policypb.Value_IpAddressValue:
		return net.IP(x.IpAddressValue.GetValue()).String() + " (ip_address)"
	case *policypb.Value_TimestampValue:
		ts, err := types.TimestampFromProto(x.TimestampValue.GetValue())
		if err != nil {
			return "<bad timestamp> (timestamp)"
		}
		return ts.UTC().Format(time.RFC3339Nano) + " (timestamp)"
	case *policypb.Value_DurationValue:
		d, err := types.DurationFromProto(x.DurationValue.GetValue())
		if err != nil {
			return "<bad duration> (duration)"
		}
		return d.String() + " (duration)"
	case *policypb.Value_EmailAddressValue:
		return strconv.Quote(x.EmailAddressValue.GetValue()) + " (email_address)"
	case *policypb.Value_DnsNameValue:
		return strconv.Quote(x.DnsNameValue.GetValue()) + " (dns_name)"
	case *policypb.Value_UriValue:
		return strconv.Quote(x.UriValue.GetValue()) + " (uri)"
	case *policypb.Value_StringMapValue:
		keys := make([]string, 0, len(x.StringMapValue.GetValue()))
		for k := range x.StringMapValue.GetValue() {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + x.StringMapValue.GetValue()[k]
		}
		return "{" + strings.Join(parts, ", ") + "} (string_map)"
	}
	return fmt.Sprintf("%v", v.Value)
}

// FormatInstance renders an instance on lines indented by indent: its name and value, then
// its dimensions sorted by key.
func FormatInstance(inst *encode.Instance, indent string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s%s value=%s\n", indent, inst.Name, FormatValue(inst.Value))
	dims := func(label string, ds []encode.Dim) {
		sorted := slices.Clone(ds)
		slices.SortFunc(sorted, func(a, b encode.Dim) int { return strings.Compare(a.Key, b.Key) })
		for _, d := range sorted {
			fmt.Fprintf(&b, "%s  %s%s = %s\n", indent, label, d.Key, FormatValue(d.Value))
		}
	}
	dims("", inst.Dimensions)
	if inst.MonitoredResourceType != nil {
		fmt.Fprintf(&b, "%s  monitored_resource_type = %q\n", indent, *inst.MonitoredResourceType)
	}
	dims("monitored_resource.", inst.MonitoredResourceDimensions)
	return b.String()
}
