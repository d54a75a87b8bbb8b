// Package modelpb holds Mixer's adapter model messages (ReportResult,
// InfrastructureBackend and its Validate and session calls), generated with
// gogo from mixer/adapter/model/v1beta1.
package modelpb
