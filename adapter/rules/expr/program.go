package expr

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// Program is an expression compiled against a Layout into typed closures:
// attributes are read by slot, values travel as Value (never boxed in an
// interface), and lookup errors are made once, at compile time. Evaluating
// attributes, constants, `|`, map lookups, comparisons, &&, ||,
// conditional, match, startsWith, endsWith, size and regexes with a constant
// pattern allocates nothing. What builds a new value allocates as in the
// interpreter: string +, toLower, ip(), timestamp(), dnsName(), email(),
// uri(), a regex whose pattern is computed, and comparisons of DNS_NAME,
// EMAIL_ADDRESS and URI values (normalised as Mixer does).
//
// A Program gives the same value, or the same error, as Eval on the same
// bag (TestProgramMatchesInterpreter holds it to that). It is immutable and
// safe for concurrent use with distinct Records.
type Program struct {
	src  string
	typ  ValueType
	root evalFn
	// str, boolf and intf, when set, evaluate a STRING, BOOL or INT64
	// program of the forms rules are mostly made of without building a
	// Value (see strFast, boolFast, intFast): a Value is 96 bytes, copied
	// at every level of a tree of closures.
	str   strFn
	boolf boolFn
	intf  intFn
}

// strFn, boolFn and intFn evaluate a node of their type strictly.
type (
	strFn  func(r *Record) (string, error)
	boolFn func(r *Record) (bool, error)
	intFn  func(r *Record) (int64, error)
)

// evalFn returns the value of a node and whether it is present; absent
// values happen only in optional mode, as in eval.
type evalFn func(r *Record, optional bool) (Value, bool, error)

// Type is the type of the program's values.
func (p *Program) Type() ValueType { return p.typ }

// String is the expression as written.
func (p *Program) String() string { return p.src }

// Eval evaluates the program against r.
func (p *Program) Eval(r *Record) (Value, error) {
	switch {
	case p.str != nil:
		s, err := p.str(r)
		return Value{Str: s}, err
	case p.boolf != nil:
		b, err := p.boolf(r)
		return Value{Bool: b}, err
	case p.intf != nil:
		i, err := p.intf(r)
		return Value{Int: i}, err
	}
	v, _, err := p.root(r, false)
	return v, err
}

// EvalBool evaluates a BOOL program, such as a rule's match condition.
func (p *Program) EvalBool(r *Record) (bool, error) {
	if p.boolf != nil {
		return p.boolf(r)
	}
	v, _, err := p.root(r, false)
	return v.Bool, err
}

// EvalInt evaluates an INT64 program: Eval(r).Int, without building a
// Value for the common forms.
func (p *Program) EvalInt(r *Record) (int64, error) {
	if p.intf != nil {
		return p.intf(r)
	}
	v, _, err := p.root(r, false)
	return v.Int, err
}

// Program compiles e against l. Every attribute e reads must have a slot in
// l; compiling against the layout of the manifest e was compiled with
// always succeeds.
func (e *Expr) Program(l *Layout) (*Program, error) {
	c := programCompiler{layout: l, src: e.src}
	root, err := c.compile(e.root)
	if err != nil {
		return nil, err
	}
	p := &Program{src: e.src, typ: e.root.typ, root: root}
	switch e.root.typ {
	case String:
		p.str, _ = c.strFast(e.root)
	case Bool:
		p.boolf, _ = c.boolFast(e.root)
	case Int64:
		p.intf, _ = c.intFast(e.root)
	}
	return p, nil
}

// EvalString evaluates a STRING program: Eval(r).Str, without building a
// Value for the common forms.
func (p *Program) EvalString(r *Record) (string, error) {
	if p.str != nil {
		return p.str(r)
	}
	v, _, err := p.root(r, false)
	return v.Str, err
}

// strFast compiles the string forms rules are mostly made of (a STRING
// attribute, a string constant, `a | b` of those, conditional and
// conditionalString of a boolFast condition and strFast branches) into a
// closure that returns the text itself, with the interpreter's semantics:
// an absent attribute is a LookupError unless a `|` alternative follows.
// Every node is evaluated strictly: `|` takes a fast path only when its
// left operand is an attribute, the one operand whose absence it tests.
func (c *programCompiler) strFast(n *node) (strFn, bool) {
	if n.typ != String {
		return nil, false
	}
	switch n.kind {
	case constNode:
		s, ok := n.val.(string)
		return func(*Record) (string, error) { return s, nil }, ok
	case attrNode:
		slot, ok := c.layout.Slot(n.name)
		if !ok || c.layout.Type(slot) != String {
			return nil, false
		}
		lookupErr := &LookupError{Name: n.name}
		return func(r *Record) (string, error) {
			if r.set[slot] != r.gen {
				return "", lookupErr
			}
			return r.vals[slot].Str, nil
		}, true
	case callNode:
		if n.name == "conditional" || n.name == "conditionalString" {
			return c.conditionalStr(n)
		}
		if n.name != "OR" || n.args[0].kind != attrNode {
			return nil, false
		}
		slot, ok := c.layout.Slot(n.args[0].name)
		if !ok || c.layout.Type(slot) != String {
			return nil, false
		}
		rest, ok := c.strFast(n.args[1])
		if !ok {
			return nil, false
		}
		return func(r *Record) (string, error) {
			if r.set[slot] == r.gen {
				return r.vals[slot].Str, nil
			}
			return rest(r)
		}, true
	}
	return nil, false
}

// conditionalStr is strFast of conditional (lazy: only the branch taken is
// evaluated) and conditionalString (a function: its three arguments are
// evaluated in order, then one is picked).
func (c *programCompiler) conditionalStr(n *node) (strFn, bool) {
	cond, ok := c.boolFast(n.args[0])
	if !ok {
		return nil, false
	}
	yes, ok := c.strFast(n.args[1])
	if !ok {
		return nil, false
	}
	no, ok := c.strFast(n.args[2])
	if !ok {
		return nil, false
	}
	if n.name == "conditional" {
		return func(r *Record) (string, error) {
			b, err := cond(r)
			if err != nil {
				return "", err
			}
			if b {
				return yes(r)
			}
			return no(r)
		}, true
	}
	return func(r *Record) (string, error) {
		b, err := cond(r)
		if err != nil {
			return "", err
		}
		y, err := yes(r)
		if err != nil {
			return "", err
		}
		nv, err := no(r)
		if err != nil {
			return "", err
		}
		if b {
			return y, nil
		}
		return nv, nil
	}, true
}

// boolFast is strFast for BOOL nodes: a BOOL attribute or constant, `a | b`
// with an attribute on the left, &&, ||, !, `s == "const"` (and !=) on a
// strFast operand, `b == true|false` on a boolFast one, and match with a
// constant pattern on a strFast operand.
func (c *programCompiler) boolFast(n *node) (boolFn, bool) {
	if n.typ != Bool {
		return nil, false
	}
	switch n.kind {
	case constNode:
		b, ok := n.val.(bool)
		return func(*Record) (bool, error) { return b, nil }, ok
	case attrNode:
		slot, ok := c.layout.Slot(n.name)
		if !ok || c.layout.Type(slot) != Bool {
			return nil, false
		}
		lookupErr := &LookupError{Name: n.name}
		return func(r *Record) (bool, error) {
			if r.set[slot] != r.gen {
				return false, lookupErr
			}
			return r.vals[slot].Bool, nil
		}, true
	}
	switch n.name {
	case "OR":
		if n.args[0].kind != attrNode {
			return nil, false
		}
		slot, ok := c.layout.Slot(n.args[0].name)
		if !ok || c.layout.Type(slot) != Bool {
			return nil, false
		}
		rest, ok := c.boolFast(n.args[1])
		if !ok {
			return nil, false
		}
		return func(r *Record) (bool, error) {
			if r.set[slot] == r.gen {
				return r.vals[slot].Bool, nil
			}
			return rest(r)
		}, true
	case "LAND", "LOR":
		a, ok := c.boolFast(n.args[0])
		if !ok {
			return nil, false
		}
		b, ok := c.boolFast(n.args[1])
		if !ok {
			return nil, false
		}
		short := n.name == "LOR"
		return func(r *Record) (bool, error) {
			l, err := a(r)
			if err != nil {
				return false, err
			}
			if l == short {
				return l, nil
			}
			return b(r)
		}, true
	case "!":
		a, ok := c.boolFast(n.args[0])
		if !ok {
			return nil, false
		}
		return func(r *Record) (bool, error) {
			v, err := a(r)
			if err != nil {
				return false, err
			}
			return !v, nil
		}, true
	case "EQ", "NEQ":
		return c.eqBool(n)
	case "match":
		p := n.args[1]
		if p.kind != constNode {
			return nil, false
		}
		pattern, isString := p.val.(string)
		sf, ok := c.strFast(n.args[0])
		if !ok || !isString {
			return nil, false
		}
		return func(r *Record) (bool, error) {
			s, err := sf(r)
			if err != nil {
				return false, err
			}
			return match(s, pattern), nil
		}, true
	}
	return nil, false
}

// eqBool is boolFast of `s == "const"` on a strFast operand and of
// `b == true|false` on a boolFast one (the constant on either side; a
// constant cannot fail, so only the other operand can).
func (c *programCompiler) eqBool(n *node) (boolFn, bool) {
	want := n.name == "EQ"
	a, b := n.args[0], n.args[1]
	if a.kind == constNode && b.kind != constNode {
		a, b = b, a
	}
	if b.kind != constNode || a.kind == constNode {
		return nil, false
	}
	switch a.typ {
	case String:
		sf, ok := c.strFast(a)
		cs, isString := b.val.(string)
		if !ok || !isString {
			return nil, false
		}
		return func(r *Record) (bool, error) {
			s, err := sf(r)
			if err != nil {
				return false, err
			}
			return (s == cs) == want, nil
		}, true
	case Bool:
		bf, ok := c.boolFast(a)
		cb, isBool := b.val.(bool)
		if !ok || !isBool {
			return nil, false
		}
		return func(r *Record) (bool, error) {
			v, err := bf(r)
			if err != nil {
				return false, err
			}
			return (v == cb) == want, nil
		}, true
	}
	return nil, false
}

// intFast is strFast for INT64 nodes: an INT64 attribute or constant, and
// `a | b` with an attribute on the left.
func (c *programCompiler) intFast(n *node) (intFn, bool) {
	if n.typ != Int64 {
		return nil, false
	}
	switch n.kind {
	case constNode:
		i, ok := n.val.(int64)
		return func(*Record) (int64, error) { return i, nil }, ok
	case attrNode:
		slot, ok := c.layout.Slot(n.name)
		if !ok || c.layout.Type(slot) != Int64 {
			return nil, false
		}
		lookupErr := &LookupError{Name: n.name}
		return func(r *Record) (int64, error) {
			if r.set[slot] != r.gen {
				return 0, lookupErr
			}
			return r.vals[slot].Int, nil
		}, true
	}
	if n.name != "OR" || n.args[0].kind != attrNode {
		return nil, false
	}
	slot, ok := c.layout.Slot(n.args[0].name)
	if !ok || c.layout.Type(slot) != Int64 {
		return nil, false
	}
	rest, ok := c.intFast(n.args[1])
	if !ok {
		return nil, false
	}
	return func(r *Record) (int64, error) {
		if r.set[slot] == r.gen {
			return r.vals[slot].Int, nil
		}
		return rest(r)
	}, true
}

type programCompiler struct {
	layout *Layout
	src    string
}

func strict(f evalFn, r *Record) (Value, error) {
	v, _, err := f(r, false)
	return v, err
}

func (c *programCompiler) compile(n *node) (evalFn, error) {
	switch n.kind {
	case constNode:
		v, err := constValue(n)
		if err != nil {
			return nil, err
		}
		return func(*Record, bool) (Value, bool, error) { return v, true, nil }, nil
	case attrNode:
		slot, ok := c.layout.Slot(n.name)
		if !ok || c.layout.Type(slot) != n.typ {
			return nil, &Error{Expr: c.src, Pos: n.pos + 1, Msg: fmt.Sprintf("attribute '%s' has no %s slot in the layout", n.name, n.typ)}
		}
		lookupErr := &LookupError{Name: n.name}
		return func(r *Record, optional bool) (Value, bool, error) {
			if r.set[slot] != r.gen {
				if optional {
					return Value{}, false, nil
				}
				return Value{}, false, lookupErr
			}
			return r.vals[slot], true, nil
		}, nil
	}
	var target evalFn
	if n.target != nil {
		t, err := c.compile(n.target)
		if err != nil {
			return nil, err
		}
		target = t
	}
	args := make([]evalFn, len(n.args))
	for i, a := range n.args {
		f, err := c.compile(a)
		if err != nil {
			return nil, err
		}
		args[i] = f
	}
	return c.call(n, target, args)
}

// constValue is a constant node's value.
func constValue(n *node) (Value, error) {
	switch x := n.val.(type) {
	case string:
		return Value{Str: x}, nil
	case int64:
		return Value{Int: x}, nil
	case time.Duration:
		return Value{Int: int64(x)}, nil
	case float64:
		return Value{Float: x}, nil
	case bool:
		return Value{Bool: x}, nil
	}
	return Value{}, fmt.Errorf("internal error: constant %v of Go type %T", n.val, n.val)
}

func boolValue(b bool) Value { return Value{Bool: b} }

func (c *programCompiler) call(n *node, target evalFn, args []evalFn) (evalFn, error) {
	switch n.name {
	case "OR":
		a, b := args[0], args[1]
		return func(r *Record, optional bool) (Value, bool, error) {
			v, ok, err := a(r, true)
			if err != nil || ok {
				return v, ok, err
			}
			return b(r, optional)
		}, nil
	case "INDEX":
		m, k := args[0], args[1]
		return func(r *Record, optional bool) (Value, bool, error) {
			mv, ok, err := m(r, optional)
			if err != nil || !ok {
				return Value{}, false, err
			}
			kv, ok, err := k(r, optional)
			if err != nil || !ok {
				return Value{}, false, err
			}
			s, found := mv.Lookup(kv.Str)
			if !found && optional {
				return Value{}, false, nil
			}
			return Value{Str: s}, true, nil
		}, nil
	case "LAND", "LOR":
		a, b := args[0], args[1]
		short := n.name == "LOR"
		return func(r *Record, _ bool) (Value, bool, error) {
			l, err := strict(a, r)
			if err != nil {
				return Value{}, false, err
			}
			if l.Bool == short {
				return l, true, nil
			}
			v, err := strict(b, r)
			return v, err == nil, err
		}, nil
	case "conditional", "conditionalString":
		cond, yes, no := args[0], args[1], args[2]
		lazy := n.name == "conditional" // conditionalString is a function: all arguments are evaluated
		return func(r *Record, _ bool) (Value, bool, error) {
			cv, err := strict(cond, r)
			if err != nil {
				return Value{}, false, err
			}
			if !lazy {
				y, err := strict(yes, r)
				if err != nil {
					return Value{}, false, err
				}
				nv, err := strict(no, r)
				if err != nil {
					return Value{}, false, err
				}
				if cv.Bool {
					return y, true, nil
				}
				return nv, true, nil
			}
			branch := no
			if cv.Bool {
				branch = yes
			}
			v, err := strict(branch, r)
			return v, err == nil, err
		}, nil
	case "EQ", "NEQ":
		if f := c.eqFast(n); f != nil {
			return f, nil
		}
		eq, err := equalFn(n.args[0].typ)
		if err != nil {
			return nil, err
		}
		want := n.name == "EQ"
		return binary(args, func(a, b Value) (Value, error) {
			e, err := eq(a, b)
			if err != nil {
				return Value{}, err
			}
			return boolValue(e == want), nil
		}), nil
	case "LT", "LEQ", "GT", "GEQ":
		cmp, err := compareFn(n.args[0].typ)
		if err != nil {
			return nil, err
		}
		test := map[string]func(int) bool{
			"LT":  func(c int) bool { return c < 0 },
			"LEQ": func(c int) bool { return c <= 0 },
			"GT":  func(c int) bool { return c > 0 },
			"GEQ": func(c int) bool { return c >= 0 },
		}[n.name]
		return binary(args, func(a, b Value) (Value, error) { return boolValue(test(cmp(a, b))), nil }), nil
	case "ADD":
		switch t := n.typ; {
		case t.stringLike():
			return binary(args, func(a, b Value) (Value, error) { return Value{Str: a.Str + b.Str}, nil }), nil
		case t == Int64:
			return binary(args, func(a, b Value) (Value, error) { return Value{Int: a.Int + b.Int}, nil }), nil
		case t == Double:
			return binary(args, func(a, b Value) (Value, error) { return Value{Float: a.Float + b.Float}, nil }), nil
		}
	case "!":
		return unary(args[0], func(a Value) (Value, error) { return boolValue(!a.Bool), nil }), nil
	case "size":
		return unary(args[0], func(a Value) (Value, error) { return Value{Int: int64(len(a.Str))}, nil }), nil
	case "toLower":
		return unary(args[0], func(a Value) (Value, error) { return Value{Str: strings.ToLower(a.Str)}, nil }), nil
	case "ip":
		return unary(args[0], func(a Value) (Value, error) {
			ip := net.ParseIP(a.Str)
			if ip == nil {
				return Value{}, fmt.Errorf("could not convert %s to IP_ADDRESS", a.Str)
			}
			return Value{IP: ip}, nil
		}), nil
	case "timestamp":
		return unary(args[0], func(a Value) (Value, error) {
			t, err := time.Parse(time.RFC3339, a.Str)
			if err != nil {
				return Value{}, fmt.Errorf("could not convert '%s' to TIMESTAMP. expected format: '%s'", a.Str, time.RFC3339)
			}
			return Value{Int: t.Unix(), Nanos: int32(t.Nanosecond())}, nil
		}), nil
	case "dnsName", "email", "uri":
		conv := map[string]func(string) (string, error){"dnsName": dnsName, "email": email, "uri": uri}[n.name]
		return unary(args[0], func(a Value) (Value, error) {
			s, err := conv(a.Str)
			return Value{Str: s}, err
		}), nil
	case "match":
		if p := n.args[1]; p.kind == constNode {
			pattern := p.val.(string)
			if sf, ok := c.strFast(n.args[0]); ok {
				return func(r *Record, _ bool) (Value, bool, error) {
					s, err := sf(r)
					if err != nil {
						return Value{}, false, err
					}
					return boolValue(match(s, pattern)), true, nil
				}, nil
			}
			return unary(args[0], func(a Value) (Value, error) { return boolValue(match(a.Str, pattern)), nil }), nil
		}
		return binary(args, func(a, b Value) (Value, error) { return boolValue(match(a.Str, b.Str)), nil }), nil
	case "startsWith", "endsWith":
		has := strings.HasPrefix
		if n.name == "endsWith" {
			has = strings.HasSuffix
		}
		return method(target, args[0], func(t, a Value) (Value, error) { return boolValue(has(t.Str, a.Str)), nil }), nil
	case "matches":
		if n.target.kind == constNode {
			re, reErr := regexp.Compile(n.target.val.(string))
			return method(target, args[0], func(_, a Value) (Value, error) {
				if reErr != nil {
					return Value{}, reErr
				}
				return boolValue(re.MatchString(a.Str)), nil
			}), nil
		}
		return method(target, args[0], func(t, a Value) (Value, error) {
			ok, err := regexp.MatchString(t.Str, a.Str)
			return boolValue(ok), err
		}), nil
	case "emptyStringMap":
		return func(*Record, bool) (Value, bool, error) { return Value{}, true, nil }, nil
	}
	return nil, fmt.Errorf("internal error: no typed implementation of %s for %s", n.name, n.typ)
}

// unary, binary and method evaluate their operands strictly and in the
// interpreter's order (target, then arguments), then apply op.
func unary(a evalFn, op func(a Value) (Value, error)) evalFn {
	return func(r *Record, _ bool) (Value, bool, error) {
		av, err := strict(a, r)
		if err != nil {
			return Value{}, false, err
		}
		v, err := op(av)
		return v, err == nil, err
	}
}

func binary(args []evalFn, op func(a, b Value) (Value, error)) evalFn {
	a, b := args[0], args[1]
	return func(r *Record, _ bool) (Value, bool, error) {
		av, err := strict(a, r)
		if err != nil {
			return Value{}, false, err
		}
		bv, err := strict(b, r)
		if err != nil {
			return Value{}, false, err
		}
		v, err := op(av, bv)
		return v, err == nil, err
	}
}

func method(target, arg evalFn, op func(t, a Value) (Value, error)) evalFn {
	return func(r *Record, _ bool) (Value, bool, error) {
		tv, err := strict(target, r)
		if err != nil {
			return Value{}, false, err
		}
		av, err := strict(arg, r)
		if err != nil {
			return Value{}, false, err
		}
		v, err := op(tv, av)
		return v, err == nil, err
	}
}

// equalFn is equal for operands of type t.
func equalFn(t ValueType) (func(a, b Value) (bool, error), error) {
	switch t {
	case String:
		return func(a, b Value) (bool, error) { return a.Str == b.Str, nil }, nil
	case DNSName:
		return func(a, b Value) (bool, error) { return dnsNameEqual(a.Str, b.Str) }, nil
	case EmailAddress:
		return func(a, b Value) (bool, error) { return emailEqual(a.Str, b.Str) }, nil
	case URI:
		return func(a, b Value) (bool, error) { return uriEqual(a.Str, b.Str) }, nil
	case Int64, Duration:
		return func(a, b Value) (bool, error) { return a.Int == b.Int, nil }, nil
	case Double:
		return func(a, b Value) (bool, error) { return a.Float == b.Float, nil }, nil
	case Bool:
		return func(a, b Value) (bool, error) { return a.Bool == b.Bool, nil }, nil
	case Timestamp:
		return func(a, b Value) (bool, error) { return a.Int == b.Int && a.Nanos == b.Nanos, nil }, nil
	case IPAddress:
		return func(a, b Value) (bool, error) { return net.IP(a.IP).Equal(net.IP(b.IP)), nil }, nil
	}
	return nil, fmt.Errorf("internal error: no equality for %s", t)
}

// compareFn orders operands of type t (-1, 0, 1).
func compareFn(t ValueType) (func(a, b Value) int, error) {
	switch {
	case t.stringLike():
		return func(a, b Value) int { return strings.Compare(a.Str, b.Str) }, nil
	case t == Int64:
		return func(a, b Value) int { return cmp3(a.Int < b.Int, a.Int > b.Int) }, nil
	case t == Double:
		return func(a, b Value) int { return cmp3(a.Float < b.Float, a.Float > b.Float) }, nil
	case t == Timestamp:
		return func(a, b Value) int {
			if a.Int != b.Int {
				return cmp3(a.Int < b.Int, true)
			}
			return cmp3(a.Nanos < b.Nanos, a.Nanos > b.Nanos)
		}, nil
	}
	return nil, fmt.Errorf("internal error: no order for %s", t)
}

// eqFast is eqBool as a generic node, for an equality inside a tree the
// fast paths do not cover; nil when n is of another form.
func (c *programCompiler) eqFast(n *node) evalFn {
	f, ok := c.eqBool(n)
	if !ok {
		f, ok = c.eqBoolGeneric(n)
	}
	if !ok {
		return nil
	}
	return func(r *Record, _ bool) (Value, bool, error) {
		b, err := f(r)
		if err != nil {
			return Value{}, false, err
		}
		return boolValue(b), true, nil
	}
}

// eqBoolGeneric is `b == true|false` on a BOOL operand of any form,
// evaluated by the generic path.
func (c *programCompiler) eqBoolGeneric(n *node) (boolFn, bool) {
	want := n.name == "EQ"
	a, b := n.args[0], n.args[1]
	if a.kind == constNode && b.kind != constNode {
		a, b = b, a
	}
	cb, isBool := b.val.(bool)
	if b.kind != constNode || a.kind == constNode || a.typ != Bool || !isBool {
		return nil, false
	}
	f, err := c.compile(a)
	if err != nil {
		return nil, false
	}
	return func(r *Record) (bool, error) {
		v, _, err := f(r, false)
		if err != nil {
			return false, err
		}
		return (v.Bool == cb) == want, nil
	}, true
}
