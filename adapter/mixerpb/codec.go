package mixerpb

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// CodecName is the content-subtype the codec registers for. It must be "proto"
// so that the wire content type stays application/grpc+proto, which Mixer sends.
const CodecName = "proto"

// GeneratedMessage is what gogo-generated messages implement. grpc-go's default
// codec would route gogo types through protobuf-go's reflection-based legacy
// wrapper; this codec calls the generated code and nothing else.
type GeneratedMessage interface {
	Size() int
	MarshalToSizedBuffer([]byte) (int, error)
	Unmarshal([]byte) error
}

// Codec is a grpc encoding.CodecV2 for gogo-generated messages. Install it per
// server or per connection (grpc.ForceServerCodecV2, grpc.ForceCodecV2) rather
// than with encoding.RegisterCodecV2, which would change process-wide state.
//
// gogo messages go through their generated Marshal/Unmarshal. Messages
// generated for protobuf-go (the gRPC health service's, and Envoy's Access
// Log Service messages from go-control-plane) go through protobuf-go, whose
// generated code they carry. Messages read in place (HandleMetric requests,
// access-log messages) implement BufferUnmarshaler and get the received
// buffers. Anything else is refused: there is no reflection-based fallback.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return CodecName }

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(protoreflect.ProtoMessage); ok {
		b, err := proto.Marshal(m)
		return mem.BufferSlice{mem.SliceBuffer(b)}, err
	}
	m, ok := v.(GeneratedMessage)
	if !ok {
		return nil, fmt.Errorf("mixerpb codec: %T is not a generated protobuf message", v)
	}
	size := m.Size()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBuffer(buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBuffer(*buf); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// BufferUnmarshaler is implemented by messages that read the received bytes
// in place (wire.Request) instead of copying them into generated structs. They
// keep a reference to the buffers and release it themselves.
type BufferUnmarshaler interface {
	UnmarshalBuffers(mem.BufferSlice) error
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case BufferUnmarshaler:
		return m.UnmarshalBuffers(data)
	case protoreflect.ProtoMessage:
		return proto.Unmarshal(data.Materialize(), m)
	case interface{ Unmarshal([]byte) error }:
		// Generated Unmarshal copies what it keeps, so a pooled buffer can go
		// back to the pool right after.
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return m.Unmarshal(buf.ReadOnlyData())
	default:
		return fmt.Errorf("mixerpb codec: %T is not a generated protobuf message", v)
	}
}
