// Package policypb holds istio.policy.v1beta1's Value and its members (the
// typed values of instance fields), generated with gogo from policy/v1beta1.
package policypb
