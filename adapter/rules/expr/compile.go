package expr

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Error is a compile-time problem with an expression.
type Error struct {
	Expr string // the expression as written
	Pos  int    // 1-based byte position of the problem, 0 if it concerns the whole expression
	Msg  string
}

func (e *Error) Error() string {
	if e.Pos > 0 {
		return fmt.Sprintf("expression %q: %s (position %d)", e.Expr, e.Msg, e.Pos)
	}
	return fmt.Sprintf("expression %q: %s", e.Expr, e.Msg)
}

// Expr is a compiled, type-checked expression. It is immutable and safe for concurrent use.
type Expr struct {
	src      string
	root     *node
	warnings []string
}

// Warnings lists the forms this package accepts but a real Mixer 1.7 rejects, each with
// what to write instead. An expression with warnings works here and fails in a cluster.
func (e *Expr) Warnings() []string { return append([]string(nil), e.warnings...) }

// Type is the type every successful Eval returns.
func (e *Expr) Type() ValueType { return e.root.typ }

// String returns the expression as written.
func (e *Expr) String() string { return e.src }

type nodeKind int

const (
	constNode nodeKind = iota
	attrNode
	callNode
)

// node mirrors Mixer's simplified AST (constants, variables, functions with optional
// target), so operators are calls named as Mixer names them: EQ, LAND, OR, INDEX...
type node struct {
	kind   nodeKind
	pos    int // 0-based byte offset the node is blamed at
	start  int // source span, for messages that quote an operand
	end    int
	typ    ValueType
	val    any    // constNode
	name   string // attribute or function name
	sym    string // operator as written, for messages
	target *node  // receiver of a method call
	args   []*node
}

// Compile parses src and checks it against manifest.
//
// Behaviour follows Istio 1.7's CEXL runtime, Mixer's default expression language
// (istio/istio@1.7.0:mixer/pkg/runtime/lang/lang.go): the parser is Go's expression parser
// (mixer/pkg/lang/ast/expr.go), types are checked as in mixer/pkg/lang/ast/func.go and
// mixer/pkg/lang/externs.go, and the limits of the IL compiler (which operators work on which
// types, how `|` treats absent values) follow mixer/pkg/lang/compiler/compiler.go.
//
// CEXL is smaller than Go's syntax suggests, and what Mixer rejects is mostly rejected here:
// negative literals, `==` and `<` on DURATION, and bare duration literals (`10ms` does not
// parse; the string "10ms" is a DURATION constant). Two forms are accepted although Mixer
// rejects them, because people write them and their meaning is plain: `!x` (Mixer has no
// NOT function) and startsWith/endsWith called as functions (Mixer has them only as methods,
// `s.startsWith("a")`). Both compile with a warning (Expr.Warnings) that gives the form
// Mixer accepts, so a config that passes here can be fixed before it reaches a cluster.
func Compile(src string, manifest Manifest) (*Expr, error) {
	c := compiler{src: src, manifest: manifest}
	fset := token.NewFileSet()
	parsed, err := parser.ParseExprFrom(fset, "", src, 0)
	if err != nil {
		return nil, c.syntaxError(err)
	}
	c.file = fset.File(parsed.Pos())
	root, err := c.build(parsed)
	if err != nil {
		return nil, err
	}
	if err := c.check(root); err != nil {
		return nil, err
	}
	return &Expr{src: src, root: root, warnings: c.warnings}, nil
}

// CompileCondition compiles a rule's match condition, which must be BOOL. As in Mixer
// (ephemeral.go, processRuleConfigs) an empty condition always matches.
func CompileCondition(src string, manifest Manifest) (*Expr, error) {
	if src == "" {
		return constant(src, Bool, true), nil
	}
	e, err := Compile(src, manifest)
	if err != nil {
		return nil, err
	}
	if e.Type() != Bool {
		return nil, &Error{Expr: src, Msg: fmt.Sprintf("evaluated to type %s, expected type BOOL", e.Type())}
	}
	return e, nil
}

func constant(src string, t ValueType, v any) *Expr {
	return &Expr{src: src, root: &node{kind: constNode, typ: t, val: v}}
}

type compiler struct {
	src      string
	manifest Manifest
	file     *token.File
	warnings []string
}

// warnf records a form that works here but not in Mixer, in the format of Error.
func (c *compiler) warnf(pos int, format string, args ...any) {
	c.warnings = append(c.warnings, (&Error{Expr: c.src, Pos: pos + 1, Msg: fmt.Sprintf(format, args...)}).Error())
}

func (c *compiler) errorf(pos int, format string, args ...any) *Error {
	return &Error{Expr: c.src, Pos: pos + 1, Msg: fmt.Sprintf(format, args...)}
}

func (c *compiler) offset(p token.Pos) int {
	if c.file == nil || !p.IsValid() {
		return 0
	}
	return c.file.Offset(p)
}

func (c *compiler) syntaxError(err error) error {
	var list scanner.ErrorList
	if errors.As(err, &list) && len(list) > 0 {
		return &Error{Expr: c.src, Pos: list[0].Pos.Offset + 1, Msg: "syntax error: " + list[0].Msg}
	}
	return &Error{Expr: c.src, Msg: "syntax error: " + err.Error()}
}

// binaryOp names the Go operators CEXL gives a meaning to as Mixer does (ast/expr.go, tMap).
func binaryOp(t token.Token) (string, bool) {
	switch t {
	case token.EQL:
		return "EQ", true
	case token.NEQ:
		return "NEQ", true
	case token.LSS:
		return "LT", true
	case token.LEQ:
		return "LEQ", true
	case token.GTR:
		return "GT", true
	case token.GEQ:
		return "GEQ", true
	case token.LAND:
		return "LAND", true
	case token.LOR:
		return "LOR", true
	case token.OR:
		return "OR", true
	case token.ADD:
		return "ADD", true
	}
	return "", false
}

// build converts Go's AST into Mixer's, as mixer/pkg/lang/ast/expr.go (process) does, and
// records the source span of each node.
func (c *compiler) build(e ast.Expr) (*node, error) {
	n, err := c.buildNode(e)
	if n != nil {
		n.start, n.end = c.offset(e.Pos()), c.offset(e.End())
	}
	return n, err
}

func (c *compiler) buildNode(e ast.Expr) (*node, error) {
	switch v := e.(type) {
	case *ast.ParenExpr:
		return c.build(v.X)
	case *ast.BasicLit:
		return c.literal(v)
	case *ast.Ident:
		// Mixer lower-cases before comparing, so TRUE and False are booleans too.
		switch strings.ToLower(v.Name) {
		case "true":
			return &node{kind: constNode, pos: c.offset(v.Pos()), typ: Bool, val: true}, nil
		case "false":
			return &node{kind: constNode, pos: c.offset(v.Pos()), typ: Bool, val: false}, nil
		}
		return &node{kind: attrNode, pos: c.offset(v.Pos()), name: v.Name}, nil
	case *ast.SelectorExpr:
		name, ok := dottedName(v)
		if !ok {
			return nil, c.errorf(c.offset(v.Sel.Pos()), "unsupported selector %q: only attribute names may contain dots", v.Sel.Name)
		}
		return &node{kind: attrNode, pos: c.offset(v.Pos()), name: name}, nil
	case *ast.IndexExpr:
		return c.call("INDEX", "[]", c.offset(v.Lbrack), nil, v.X, v.Index)
	case *ast.BinaryExpr:
		name, ok := binaryOp(v.Op)
		if !ok {
			return nil, c.errorf(c.offset(v.OpPos), "operator %s is not supported", v.Op)
		}
		return c.call(name, v.Op.String(), c.offset(v.OpPos), nil, v.X, v.Y)
	case *ast.UnaryExpr:
		switch v.Op {
		case token.NOT:
			// ast.tMap turns ! into NOT, but no NOT function exists (ast/func.go intrinsics),
			// so Mixer fails with "unknown function: NOT". The node is named "!", which no
			// call can spell, so NOT(x) stays an unknown function as in Mixer.
			c.warnf(c.offset(v.OpPos), "a real Mixer rejects the ! operator (unknown function: NOT); write %s == false instead", c.text(v.X))
			return c.call("!", "!", c.offset(v.OpPos), nil, v.X)
		case token.SUB:
			return nil, c.errorf(c.offset(v.OpPos), "unary - is not supported by Mixer, so negative literals cannot be written")
		}
		return nil, c.errorf(c.offset(v.OpPos), "unary operator %s is not supported", v.Op)
	case *ast.CallExpr:
		if v.Ellipsis.IsValid() {
			return nil, c.errorf(c.offset(v.Ellipsis), "... is not supported")
		}
		switch fn := v.Fun.(type) {
		case *ast.Ident:
			return c.call(fn.Name, fn.Name, c.offset(fn.Pos()), nil, v.Args...)
		case *ast.SelectorExpr:
			// a.b.c.m(x) calls method m on attribute a.b.c; "x".m(y) and (e).m(y) call it on
			// an expression (ast/expr.go, flattenSelectors).
			var target *node
			if name, ok := dottedName(fn.X); ok {
				target = &node{kind: attrNode, pos: c.offset(fn.X.Pos()), name: name}
			} else {
				switch fn.X.(type) {
				case *ast.BasicLit, *ast.ParenExpr, *ast.CallExpr:
				default:
					return nil, c.errorf(c.offset(fn.X.Pos()), "unsupported method receiver in call to %s", fn.Sel.Name)
				}
				t, err := c.build(fn.X)
				if err != nil {
					return nil, err
				}
				target = t
			}
			return c.call(fn.Sel.Name, fn.Sel.Name, c.offset(fn.Sel.Pos()), target, v.Args...)
		}
		return nil, c.errorf(c.offset(v.Pos()), "unsupported call: only named functions and methods can be called")
	}
	return nil, c.errorf(c.offset(e.Pos()), "unsupported expression %q", c.text(e))
}

func (c *compiler) text(e ast.Expr) string {
	from, to := c.offset(e.Pos()), c.offset(e.End())
	if from < 0 || to > len(c.src) || from > to {
		return ""
	}
	return c.src[from:to]
}

func (c *compiler) call(name, sym string, pos int, target *node, args ...ast.Expr) (*node, error) {
	n := &node{kind: callNode, pos: pos, name: name, sym: sym, target: target}
	for _, a := range args {
		an, err := c.build(a)
		if err != nil {
			return nil, err
		}
		n.args = append(n.args, an)
	}
	return n, nil
}

// dottedName flattens a.b.c into the attribute name "a.b.c"; attribute names live in
// a flat namespace (ast/expr.go, generateVarName).
func dottedName(e ast.Expr) (string, bool) {
	switch v := e.(type) {
	case *ast.Ident:
		return v.Name, true
	case *ast.SelectorExpr:
		prefix, ok := dottedName(v.X)
		if !ok {
			return "", false
		}
		return prefix + "." + v.Sel.Name, true
	}
	return "", false
}

// literal types a constant as ast/expr.go (newConstant) does. Integers are parsed in base 10
// only, so 0x10 is an error and 010 is ten. A string that parses as a Go duration is a
// DURATION constant: that is how CEXL writes durations, and why "0" is not a STRING.
func (c *compiler) literal(l *ast.BasicLit) (*node, error) {
	pos := c.offset(l.Pos())
	n := &node{kind: constNode, pos: pos}
	switch l.Kind {
	case token.INT:
		i, err := strconv.ParseInt(l.Value, 10, 64)
		if err != nil {
			return nil, c.errorf(pos, "invalid INT64 literal %s: Mixer reads integers in base 10 only", l.Value)
		}
		n.typ, n.val = Int64, i
	case token.FLOAT:
		f, err := strconv.ParseFloat(l.Value, 64)
		if err != nil {
			return nil, c.errorf(pos, "invalid DOUBLE literal %s", l.Value)
		}
		n.typ, n.val = Double, f
	case token.STRING, token.CHAR:
		s, err := strconv.Unquote(l.Value)
		if err != nil {
			return nil, c.errorf(pos, "invalid string literal %s", l.Value)
		}
		if d, err := time.ParseDuration(s); err == nil {
			n.typ, n.val = Duration, d
		} else {
			n.typ, n.val = String, s
		}
	default:
		return nil, c.errorf(pos, "unsupported literal %s", l.Value)
	}
	return n, nil
}

// signature is Mixer's FunctionMetadata. An Unspecified argument takes the type of the
// first Unspecified argument; an Unspecified result is that type too (ast/func.go).
type signature struct {
	method bool
	target ValueType
	args   []ValueType
	ret    ValueType
}

// lookupSignature lists the intrinsics of ast/func.go and the externs of lang/externs.go
// (istio/istio@1.7.0).
func lookupSignature(name string) (signature, bool) {
	any2 := []ValueType{Unspecified, Unspecified}
	switch name {
	case "EQ", "NEQ", "LT", "LEQ", "GT", "GEQ":
		return signature{args: any2, ret: Bool}, true
	case "OR", "ADD":
		return signature{args: any2, ret: Unspecified}, true
	case "LAND", "LOR":
		return signature{args: []ValueType{Bool, Bool}, ret: Bool}, true
	case "!":
		return signature{args: []ValueType{Bool}, ret: Bool}, true
	case "INDEX":
		return signature{args: []ValueType{StringMap, String}, ret: String}, true
	case "conditional":
		return signature{args: []ValueType{Bool, Unspecified, Unspecified}, ret: Unspecified}, true
	case "size":
		return signature{args: []ValueType{String}, ret: Int64}, true
	case "ip":
		return signature{args: []ValueType{String}, ret: IPAddress}, true
	case "timestamp":
		return signature{args: []ValueType{String}, ret: Timestamp}, true
	case "dnsName":
		return signature{args: []ValueType{String}, ret: DNSName}, true
	case "email":
		return signature{args: []ValueType{String}, ret: EmailAddress}, true
	case "uri":
		return signature{args: []ValueType{String}, ret: URI}, true
	case "match":
		return signature{args: []ValueType{String, String}, ret: Bool}, true
	case "matches", "startsWith", "endsWith":
		return signature{method: true, target: String, args: []ValueType{String}, ret: Bool}, true
	case "emptyStringMap":
		return signature{ret: StringMap}, true
	case "conditionalString":
		return signature{args: []ValueType{Bool, String, String}, ret: String}, true
	case "toLower":
		return signature{args: []ValueType{String}, ret: String}, true
	}
	return signature{}, false
}

func (c *compiler) check(n *node) error {
	switch n.kind {
	case constNode:
		return nil
	case attrNode:
		t, ok := c.manifest[n.name]
		if !ok || t == Unspecified {
			if best := Closest(n.name, c.manifest); best != "" {
				return c.errorf(n.pos, "unknown attribute '%s' (did you mean %s?)", n.name, best)
			}
			return c.errorf(n.pos, "unknown attribute '%s'", n.name)
		}
		n.typ = t
		return nil
	}
	sig, ok := lookupSignature(n.name)
	if !ok {
		return c.errorf(n.pos, "unknown function '%s'", n.name)
	}
	if n.target != nil && !sig.method {
		return c.errorf(n.pos, "%s is a function, not a method: call it as %s(...)", n.name, n.name)
	}
	if n.target == nil && sig.method && functionForm(n) {
		// startsWith(s, p) means s.startsWith(p); Mixer knows only the method.
		c.warnf(n.pos, "a real Mixer rejects %s as a function (it is only a method); write %s.%s(%s) instead",
			n.name, receiverText(c.nodeText(n.args[0])), n.name, c.nodeText(n.args[1]))
		n.target, n.args = n.args[0], n.args[1:]
	}
	if n.target == nil && sig.method {
		return c.errorf(n.pos, "%s is a method: call it as s.%s(...)", n.name, n.name)
	}
	if n.target != nil {
		if err := c.check(n.target); err != nil {
			return err
		}
		if n.target.typ != sig.target {
			return c.errorf(n.target.pos, "%s: receiver has type %s, want %s", n.name, n.target.typ, sig.target)
		}
	}
	// Mixer ignores surplus arguments (a TODO in ast/func.go); refusing them is stricter.
	if len(n.args) != len(sig.args) {
		return c.errorf(n.pos, "%s takes %d argument(s), got %d", n.name, len(sig.args), len(n.args))
	}
	for _, a := range n.args {
		if err := c.check(a); err != nil {
			return err
		}
	}
	generic := Unspecified
	for i, want := range sig.args {
		got := n.args[i].typ
		if want == Unspecified {
			if generic == Unspecified {
				generic = got
				continue
			}
			want = generic
		}
		if got != want {
			return c.argError(n, i, got, want)
		}
	}
	n.typ = sig.ret
	if n.typ == Unspecified {
		n.typ = generic
	}
	return c.checkOperand(n, generic)
}

// functionForm reports a startsWith or endsWith call written as a two-argument function.
func functionForm(n *node) bool {
	return (n.name == "startsWith" || n.name == "endsWith") && len(n.args) == 2
}

// nodeText is the source of a node, from the span its parse recorded.
func (c *compiler) nodeText(n *node) string {
	if n.end <= n.start || n.end > len(c.src) {
		return ""
	}
	return c.src[n.start:n.end]
}

// receiverText puts parentheses around a receiver that Mixer would not take bare: it accepts
// attribute names, literals, parenthesised expressions and calls (ast/expr.go).
func receiverText(s string) string {
	switch e, _ := parser.ParseExpr(s); e.(type) {
	case *ast.Ident, *ast.SelectorExpr, *ast.BasicLit, *ast.ParenExpr, *ast.CallExpr:
		return s
	}
	return "(" + s + ")"
}

func (c *compiler) argError(n *node, i int, got, want ValueType) error {
	switch n.name {
	case "EQ", "NEQ", "LT", "LEQ", "GT", "GEQ", "ADD", "OR":
		return c.errorf(n.pos, "type mismatch: %s %s %s", n.args[0].typ, n.sym, got)
	case "LAND", "LOR":
		return c.errorf(n.args[i].pos, "operator %s needs BOOL operands, got %s", n.sym, got)
	case "INDEX":
		if i == 0 {
			return c.errorf(n.args[0].pos, "cannot index a %s: only STRING_MAP values can be indexed", got)
		}
		return c.errorf(n.args[1].pos, "map key has type %s, want STRING", got)
	case "conditional":
		if i == 0 {
			return c.errorf(n.args[0].pos, "conditional: condition has type %s, want BOOL", got)
		}
		return c.errorf(n.args[i].pos, "conditional: branches have different types: %s and %s", want, got)
	}
	return c.errorf(n.args[i].pos, "%s: argument %d has type %s, want %s", n.name, i+1, got, want)
}

// checkOperand refuses what Mixer's IL compiler cannot generate code for
// (compiler.go: generateEq, generateLt, generateAdd); Mixer reports these as
// "internal compiler error -- ... not yet implemented".
func (c *compiler) checkOperand(n *node, t ValueType) error {
	var ok bool
	switch n.name {
	case "EQ", "NEQ":
		ok = t.stringLike() || t == Int64 || t == Double || t == Bool || t == Timestamp || t == IPAddress
	case "LT", "LEQ", "GT", "GEQ":
		ok = t.stringLike() || t == Int64 || t == Double || t == Timestamp
	case "ADD":
		ok = t.stringLike() || t == Int64 || t == Double
	default:
		return nil
	}
	if !ok {
		return c.errorf(n.pos, "operator %s is not supported for %s in Mixer", n.sym, t)
	}
	return nil
}

// Attributes lists the attributes the expression reads, sorted, each once.
func (e *Expr) Attributes() []string {
	seen := map[string]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		if n == nil {
			return
		}
		if n.kind == attrNode {
			seen[n.name] = true
		}
		walk(n.target)
		for _, a := range n.args {
			walk(a)
		}
	}
	walk(e.root)
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Infallible reports whether evaluating the expression can never fail on a
// bag whose values have their declared types: every attribute it reads
// strictly has a `|` alternative, and no function it calls can refuse its
// argument (ip, timestamp, dnsName, email, uri, a regex computed at run
// time, comparisons of DNS names, e-mails and URIs). Such an expression can
// be left unevaluated when nothing uses its value, with the same outcome.
func (e *Expr) Infallible() bool { return safe(e.root, false) }

func safe(n *node, optional bool) bool {
	switch n.kind {
	case constNode:
		return true
	case attrNode:
		return optional
	}
	all := func(nodes ...*node) bool {
		for _, a := range nodes {
			if !safe(a, false) {
				return false
			}
		}
		return true
	}
	switch n.name {
	case "OR":
		return safe(n.args[0], true) && safe(n.args[1], optional)
	case "INDEX":
		return safe(n.args[0], optional) && safe(n.args[1], optional)
	case "EQ", "NEQ":
		if t := n.args[0].typ; t == DNSName || t == EmailAddress || t == URI {
			return false
		}
		return all(n.args...)
	case "matches":
		if n.target.kind != constNode {
			return false
		}
		if _, err := regexp.Compile(n.target.val.(string)); err != nil {
			return false
		}
		return all(n.args...)
	case "ip", "timestamp", "dnsName", "email", "uri":
		return false
	}
	if n.target != nil && !safe(n.target, false) {
		return false
	}
	return all(n.args...)
}
