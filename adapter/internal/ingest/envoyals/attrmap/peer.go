package attrmap

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
)

// structTypeURL is the only filter-state form read: Istio's peer metadata
// (the proxy's node metadata: NAME, NAMESPACE, WORKLOAD_NAME, OWNER, ...)
// serialised as a google.protobuf.Struct. The flatbuffer form of Istio's
// metadata-exchange Wasm state is not read.
const structTypeURL = "type.googleapis.com/google.protobuf.Struct"

// peerSide says which side a filter-state key describes: 0 the source
// (downstream peer), 1 the destination (upstream peer), -1 neither.
func peerSide(key string) int {
	switch key {
	case "wasm.downstream_peer", "downstream_peer":
		return 0
	case "wasm.upstream_peer", "upstream_peer":
		return 1
	}
	return -1
}

// peerMetadata fills <side>.workload.name, .workload.namespace, .name,
// .namespace and .owner from a peer-metadata Struct.
func (b *Builder) peerMetadata(fs *logentry.FilterState) {
	side := peerSide(view(fs.Key))
	if side < 0 || view(fs.TypeURL) != structTypeURL {
		return
	}
	p := &b.m.s.peer[side]
	structStrings(fs.Value, func(key, value string) {
		switch key {
		case "WORKLOAD_NAME":
			b.setString(p.workloadName, value)
		case "NAMESPACE":
			b.setString(p.workloadNamespace, value)
			b.setString(p.namespace, value)
		case "NAME":
			b.setString(p.name, value)
		case "OWNER":
			b.setString(p.owner, value)
		}
	})
}

// structStrings calls fn for each field of an encoded google.protobuf.Struct
// whose value is a string. A malformed Struct is ignored from the point it
// goes wrong: it is metadata, not the entry.
func structStrings(b []byte, fn func(key, value string)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return
			}
			b = b[n:]
			continue
		}
		entry, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return
		}
		b = b[n:]
		key, value, isString := "", "", false
		for len(entry) > 0 {
			num, typ, n := protowire.ConsumeTag(entry)
			if n < 0 {
				return
			}
			entry = entry[n:]
			if typ != protowire.BytesType || (num != 1 && num != 2) {
				if n = protowire.ConsumeFieldValue(num, typ, entry); n < 0 {
					return
				}
				entry = entry[n:]
				continue
			}
			v, n := protowire.ConsumeBytes(entry)
			if n < 0 {
				return
			}
			entry = entry[n:]
			if num == 1 {
				key = view(v)
				continue
			}
			value, isString = stringValue(v)
		}
		if isString {
			fn(key, value)
		}
	}
}

// stringValue reads a google.protobuf.Value: its string_value, if that is
// the member set last.
func stringValue(b []byte) (string, bool) {
	s, ok := "", false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		if num == 3 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", false
			}
			s, ok, b = view(v), true, b[n:]
			continue
		}
		if num >= 1 && num <= 6 {
			ok = false // another member of the kind oneof
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return "", false
		}
		b = b[n:]
	}
	return s, ok
}
