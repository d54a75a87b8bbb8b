package crd

import (
	"fmt"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// APIVersion is the only apiVersion of Mixer's config kinds.
const APIVersion = "config.istio.io/v1alpha2"

// DefaultConfigNamespace is Mixer's default config namespace (--configDefaultNamespace):
// its rules see every request.
const DefaultConfigNamespace = "istio-system"

// The kinds Mixer reads, spelled as in resource keys.
const (
	KindAttributeManifest = "attributemanifest"
	KindTemplate          = "template"
	KindAdapter           = "adapter"
	KindHandler           = "handler"
	KindInstance          = "instance"
	KindRule              = "rule"
)

// Meta identifies a resource and where it was read from.
type Meta struct {
	Kind        string
	Name        string
	Namespace   string
	Annotations map[string]string
	File        string
	Line        int // line of the document's first key
}

// Key is Mixer's internal name, <name>.<kind>.<namespace> (store.Key.String).
func (m *Meta) Key() string { return m.Name + "." + m.Kind + "." + m.Namespace }

// Source is file:line, for messages.
func (m *Meta) Source() string { return fmt.Sprintf("%s:%d", m.File, m.Line) }

func (m *Meta) describe() string { return fmt.Sprintf("%s '%s' (%s)", m.Kind, m.Key(), m.Source()) }

// AttributeManifest declares attribute types (istio.policy.v1beta1.AttributeManifest).
type AttributeManifest struct {
	Meta
	Revision   string
	Name       string // spec.name, e.g. "istio-proxy"
	Attributes map[string]AttributeInfo
}

// AttributeInfo is one declared attribute.
type AttributeInfo struct {
	ValueType   expr.ValueType
	Description string
}

// Template is a dynamic template (istio.mixer.adapter.model.v1beta1.Template).
type Template struct {
	Meta
	Descriptor string // base64 FileDescriptorSet
}

// Adapter describes an out-of-process adapter (istio.mixer.adapter.model.v1beta1.Info).
type Adapter struct {
	Meta
	Description  string
	SessionBased bool
	Templates    []string // template references, resolved from the adapter's namespace
	Config       string   // base64 FileDescriptorSet of the adapter's Params
}

// Handler configures an adapter (istio.policy.v1beta1.Handler). A handler with
// CompiledAdapter set is a static, in-process handler.
type Handler struct {
	Meta
	Adapter         string
	CompiledAdapter string
	Params          map[string]any // as written; numbers are float64, as in a protobuf Struct
	Connection      *Connection
}

// Static reports whether the handler names a compiled-in adapter.
func (h *Handler) Static() bool { return h.CompiledAdapter != "" }

// Connection is how Mixer reaches an out-of-process adapter.
type Connection struct {
	Address        string
	Timeout        time.Duration
	Authentication *Authentication
}

// Authentication holds one of TLS or Mutual.
type Authentication struct {
	TLS    *TLS
	Mutual *Mutual
}

// TLS is server-authenticated TLS with a bearer token from TokenPath or OAuth.
type TLS struct {
	CACertificates string
	TokenPath      string
	OAuth          *OAuth
	AuthHeader     string // "PLAIN" or "BEARER"; empty when unset
	CustomHeader   string
	ServerName     string
}

// OAuth is the client-credentials token source of TLS.
type OAuth struct {
	ClientID       string
	ClientSecret   string
	TokenURL       string
	Scopes         []string
	EndpointParams map[string]string
}

// Mutual is mutual TLS.
type Mutual struct {
	PrivateKey        string
	ClientCertificate string
	CACertificates    string
	ServerName        string
}

// Instance maps attributes to a template's fields (istio.policy.v1beta1.Instance).
// An instance with CompiledTemplate set is static and cannot feed an out-of-process handler.
type Instance struct {
	Meta
	Template          string
	CompiledTemplate  string
	RawParams         map[string]any // params as written; numbers are float64
	Params            *MetricParams  // set for instances of the metric template
	AttributeBindings map[string]string
}

// Dynamic reports whether the instance names a template CR rather than a compiled template.
func (i *Instance) Dynamic() bool { return i.CompiledTemplate == "" }

// MetricParams are the params of a metric instance (metric.InstanceParam). Each value is a
// string, float64 or bool, to be compiled with expr.CompileParam.
type MetricParams struct {
	Value                       any
	Dimensions                  map[string]any
	MonitoredResourceType       any
	MonitoredResourceDimensions map[string]any
}

// Rule routes instances to handlers (istio.policy.v1beta1.Rule).
type Rule struct {
	Meta
	Match   string
	Actions []Action
	// Header operations and sampling belong to check rules; they are kept as written
	// and not validated.
	RequestHeaderOperations  []any
	ResponseHeaderOperations []any
	Sampling                 any
}

// Action sends instances to a handler.
type Action struct {
	Handler   string
	Instances []string
	Name      string
}
