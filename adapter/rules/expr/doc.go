// Package expr compiles and evaluates Mixer's attribute expression language (CEXL) against an attribute manifest.
package expr
