// Package librato is the Librato/AppOptics sink.
package librato
