package expr

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// LookupError is returned when an expression needs an attribute the bag lacks
// and no `|` alternative supplies a value. Its message is Mixer's
// (mixer/pkg/il/interpreter/interpreterRun.go, ResolveS and friends).
type LookupError struct {
	Name string
}

func (e *LookupError) Error() string { return fmt.Sprintf("lookup failed: '%s'", e.Name) }

// Eval evaluates the expression. The result has the Go type listed on Bag for e.Type(),
// except that IP_ADDRESS is always a net.IP.
func (e *Expr) Eval(bag Bag) (any, error) {
	v, _, err := eval(e.root, bag, false)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// EvalBool evaluates a BOOL expression such as a rule's match condition.
func (e *Expr) EvalBool(bag Bag) (bool, error) {
	if e.Type() != Bool {
		return false, fmt.Errorf("expression %q has type %s, not BOOL", e.src, e.Type())
	}
	v, err := e.Eval(bag)
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// eval returns the value of n and whether it is present. Only in optional mode (the
// operands of `|`) may a value be absent; otherwise absence is a LookupError. This is
// the nmJmpOnValue/nmNone split of Mixer's compiler.go: attributes, map lookups and
// nested `|` can be absent, while every other expression either yields a value or fails.
func eval(n *node, bag Bag, optional bool) (any, bool, error) {
	switch n.kind {
	case constNode:
		return n.val, true, nil
	case attrNode:
		raw, found := bag.Get(n.name)
		if !found {
			if optional {
				return nil, false, nil
			}
			return nil, false, &LookupError{Name: n.name}
		}
		v, err := fromBag(raw, n.typ)
		return v, err == nil, err
	}
	switch n.name {
	case "OR":
		v, ok, err := eval(n.args[0], bag, true)
		if err != nil || ok {
			return v, ok, err
		}
		return eval(n.args[1], bag, optional)
	case "INDEX":
		return evalIndex(n, bag, optional)
	case "LAND", "LOR":
		l, err := evalStrict(n.args[0], bag)
		if err != nil {
			return nil, false, err
		}
		if l.(bool) == (n.name == "LOR") {
			return l, true, nil
		}
		r, err := evalStrict(n.args[1], bag)
		return r, err == nil, err
	case "conditional":
		cond, err := evalStrict(n.args[0], bag)
		if err != nil {
			return nil, false, err
		}
		branch := n.args[2]
		if cond.(bool) {
			branch = n.args[1]
		}
		v, err := evalStrict(branch, bag)
		return v, err == nil, err
	}
	var target any
	if n.target != nil {
		t, err := evalStrict(n.target, bag)
		if err != nil {
			return nil, false, err
		}
		target = t
	}
	args := make([]any, len(n.args))
	for i, a := range n.args {
		v, err := evalStrict(a, bag)
		if err != nil {
			return nil, false, err
		}
		args[i] = v
	}
	v, err := apply(n, target, args)
	return v, err == nil, err
}

func evalStrict(n *node, bag Bag) (any, error) {
	v, _, err := eval(n, bag, false)
	return v, err
}

// evalIndex follows compiler.go (generateIndex) and the interpreter's lookup opcodes:
// outside `|` a missing key yields "" (NLookup/ANLookup), inside `|` it is absent (TLookup)
// so the next alternative is tried.
func evalIndex(n *node, bag Bag, optional bool) (any, bool, error) {
	m, ok, err := eval(n.args[0], bag, optional)
	if err != nil || !ok {
		return nil, false, err
	}
	key, ok, err := eval(n.args[1], bag, optional)
	if err != nil || !ok {
		return nil, false, err
	}
	v, found := m.(map[string]string)[key.(string)]
	if !found && optional {
		return nil, false, nil
	}
	return v, true, nil
}

// fromBag checks a bag value against the attribute's declared type, with the
// interpreter's error wording where it has one.
func fromBag(raw any, t ValueType) (any, error) {
	switch {
	case t.stringLike():
		if s, ok := raw.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("error converting value to string: '%v'", raw)
	case t == Int64 || t == Duration:
		var i int64
		switch v := raw.(type) {
		case int64:
			i = v
		case time.Duration:
			i = int64(v)
		default:
			return nil, fmt.Errorf("error converting value to integer or duration: '%v'", raw)
		}
		if t == Duration {
			return time.Duration(i), nil
		}
		return i, nil
	case t == Double:
		if f, ok := raw.(float64); ok {
			return f, nil
		}
		return nil, fmt.Errorf("error converting value to double: '%v'", raw)
	case t == Bool:
		if b, ok := raw.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("error converting value to bool: '%v'", raw)
	case t == Timestamp:
		if ts, ok := raw.(time.Time); ok {
			return ts, nil
		}
	case t == IPAddress:
		switch v := raw.(type) {
		case net.IP:
			return v, nil
		case []byte:
			return net.IP(v), nil
		}
	case t == StringMap:
		if m, ok := raw.(map[string]string); ok {
			return m, nil
		}
	}
	return nil, fmt.Errorf("error converting value to %s: '%v' has Go type %T", t, raw, raw)
}

func apply(n *node, target any, args []any) (any, error) {
	switch n.name {
	case "EQ", "NEQ":
		eq, err := equal(n.args[0].typ, args[0], args[1])
		if err != nil {
			return nil, err
		}
		return eq == (n.name == "EQ"), nil
	case "LT", "LEQ", "GT", "GEQ":
		return compare(n.name, args[0], args[1]), nil
	case "ADD":
		switch a := args[0].(type) {
		case string:
			return a + args[1].(string), nil
		case int64:
			return a + args[1].(int64), nil
		case float64:
			return a + args[1].(float64), nil
		}
	case "!":
		return !args[0].(bool), nil
	case "size":
		return int64(len(args[0].(string))), nil
	case "ip":
		if ip := net.ParseIP(args[0].(string)); ip != nil {
			return ip, nil
		}
		return nil, fmt.Errorf("could not convert %s to IP_ADDRESS", args[0])
	case "timestamp":
		t, err := time.Parse(time.RFC3339, args[0].(string))
		if err != nil {
			return nil, fmt.Errorf("could not convert '%s' to TIMESTAMP. expected format: '%s'", args[0], time.RFC3339)
		}
		return t, nil
	case "dnsName":
		return dnsName(args[0].(string))
	case "email":
		return email(args[0].(string))
	case "uri":
		return uri(args[0].(string))
	case "match":
		return match(args[0].(string), args[1].(string)), nil
	case "matches":
		// The receiver is the pattern: "svc.*".matches(destination.service).
		return regexp.MatchString(target.(string), args[0].(string))
	case "startsWith":
		return strings.HasPrefix(target.(string), args[0].(string)), nil
	case "endsWith":
		return strings.HasSuffix(target.(string), args[0].(string)), nil
	case "emptyStringMap":
		return map[string]string{}, nil
	case "conditionalString":
		if args[0].(bool) {
			return args[1], nil
		}
		return args[2], nil
	case "toLower":
		return strings.ToLower(args[0].(string)), nil
	}
	return nil, fmt.Errorf("internal error: no implementation of %s for %s", n.name, n.typ)
}

// match is Mixer's glob (lang/externs.go, ExternMatch): a trailing * makes a prefix match,
// otherwise a leading * makes a suffix match, otherwise the strings must be equal. A * in
// the middle is literal.
func match(s, pattern string) bool {
	if strings.HasSuffix(pattern, "*") {
		return strings.HasPrefix(s, pattern[:len(pattern)-1])
	}
	if strings.HasPrefix(pattern, "*") {
		return strings.HasSuffix(s, pattern[1:])
	}
	return s == pattern
}

// equal dispatches on the operand type as compiler.go (generateEq) does: DNS names,
// e-mails and URIs compare by their normalising externs, IPs and timestamps by value.
func equal(t ValueType, a, b any) (bool, error) {
	switch t {
	case DNSName:
		return dnsNameEqual(a.(string), b.(string))
	case EmailAddress:
		return emailEqual(a.(string), b.(string))
	case URI:
		return uriEqual(a.(string), b.(string))
	case IPAddress:
		return a.(net.IP).Equal(b.(net.IP)), nil
	case Timestamp:
		return a.(time.Time).Equal(b.(time.Time)), nil
	}
	return a == b, nil
}

func compare(op string, a, b any) bool {
	var c int
	switch x := a.(type) {
	case string:
		c = strings.Compare(x, b.(string))
	case int64:
		c = cmp3(x < b.(int64), x > b.(int64))
	case float64:
		c = cmp3(x < b.(float64), x > b.(float64))
	case time.Time:
		c = x.Compare(b.(time.Time))
	}
	switch op {
	case "LT":
		return c < 0
	case "LEQ":
		return c <= 0
	case "GT":
		return c > 0
	}
	return c >= 0
}

func cmp3(less, greater bool) int {
	switch {
	case less:
		return -1
	case greater:
		return 1
	}
	return 0
}

// dnsName validates without rewriting, with the IDNA profile of lang/externs.go.
func dnsName(s string) (string, error) {
	p := idna.New(idna.StrictDomainName(true), idna.ValidateLabels(true), idna.VerifyDNSLength(true), idna.BidiRule())
	out, err := p.ToUnicode(s)
	if err != nil {
		return "", fmt.Errorf("error converting '%s' to dns name: '%w'", s, err)
	}
	return out, nil
}

// dnsNameEqual canonicalises for lookup (case, width) and ignores one trailing dot,
// as lang/externs.go (ExternDNSNameEqual) does.
func dnsNameEqual(a, b string) (bool, error) {
	p := idna.New(idna.MapForLookup(), idna.BidiRule())
	var err error
	if a, err = p.ToUnicode(a); err != nil {
		return false, err
	}
	if b, err = p.ToUnicode(b); err != nil {
		return false, err
	}
	if a != "" && b != "" {
		if strings.HasSuffix(a, ".") && !strings.HasSuffix(b, ".") {
			a = a[:len(a)-1]
		}
		if strings.HasSuffix(b, ".") && !strings.HasSuffix(a, ".") {
			b = b[:len(b)-1]
		}
	}
	return a == b, nil
}

func email(s string) (string, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("error converting '%s' to e-mail: '%w'", s, err)
	}
	if a.Name != "" {
		return "", fmt.Errorf("error converting '%s' to e-mail: display names are not allowed", s)
	}
	if _, err := dnsName(emailDomain(a.Address)); err != nil {
		return "", fmt.Errorf("error converting '%s' to e-mail: '%w'", s, err)
	}
	return s, nil
}

func emailDomain(addr string) string {
	if i := strings.IndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

func emailLocal(addr string) string {
	if i := strings.IndexByte(addr, '@'); i >= 0 {
		return addr[:i]
	}
	return addr
}

// emailEqual compares local parts exactly and domains as DNS names.
func emailEqual(a, b string) (bool, error) {
	a1, err := mail.ParseAddress(a)
	if err != nil {
		return false, err
	}
	a2, err := mail.ParseAddress(b)
	if err != nil {
		return false, err
	}
	eq, err := dnsNameEqual(emailDomain(a1.Address), emailDomain(a2.Address))
	if err != nil {
		return false, fmt.Errorf("error comparing e-mails '%s' and '%s': %w", a, b, err)
	}
	return eq && emailLocal(a1.Address) == emailLocal(a2.Address), nil
}

func uri(s string) (string, error) {
	if s == "" {
		return "", errors.New("error converting string to uri: empty string")
	}
	if _, err := url.Parse(s); err != nil {
		return "", fmt.Errorf("error converting string to uri '%s': '%w'", s, err)
	}
	return s, nil
}

// uriEqual lower-cases schemes and, for http(s), compares hosts as DNS names
// (lang/externs.go, ExternURIEqual).
func uriEqual(a, b string) (bool, error) {
	u1, err := url.Parse(a)
	if err != nil {
		return false, fmt.Errorf("error converting string to uri '%s': '%w'", a, err)
	}
	u2, err := url.Parse(b)
	if err != nil {
		return false, fmt.Errorf("error converting string to uri '%s': '%w'", b, err)
	}
	scheme := strings.ToLower(u1.Scheme)
	if scheme != strings.ToLower(u2.Scheme) {
		return false, nil
	}
	u1.Scheme, u2.Scheme = scheme, scheme
	if scheme == "http" || scheme == "https" {
		eq, err := dnsNameEqual(u1.Hostname(), u2.Hostname())
		if err != nil || !eq || u1.Port() != u2.Port() {
			return false, err
		}
		u1.Host = u2.Host
	}
	return u1.String() == u2.String(), nil
}
