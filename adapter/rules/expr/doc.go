// Package expr compiles and evaluates Mixer's attribute expression language (CEXL) against an
// attribute manifest: with the interpreter (Expr.Eval on any Bag), or as typed programs
// (Expr.Program) on a Record laid out by a Layout, which the running adapter uses and which
// allocate nothing for the forms rules are made of.
package expr
