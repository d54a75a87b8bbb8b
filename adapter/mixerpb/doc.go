// Package mixerpb holds Mixer's out-of-process wire protocol, generated with
// gogo from the .proto files under proto/ (package metric, istio.policy.v1beta1
// and istio.mixer.adapter.model.v1beta1 in the subpackages), and the gRPC codec
// that marshals those messages with their generated code.
//
// Regenerate with `make generate`; CI fails when the committed code is stale.
package mixerpb
