package series

import (
	"fmt"
	"sort"
	"sync"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// Catalog keeps a sink's metric definitions on top of its Registry: the
// sink's own data about each definition (I: its exposed names, label
// text), the handlers sharing a definition, the rule that two definitions
// never write the same series name, and a changed definition superseding
// the older one. Every sink whose series names derive from metric names
// (the exposition, remote write, OTLP) uses it instead of its own maps.
//
// A definition no handler config binds any more stays as long as its
// family does (its series are the sink's, Registry): its series keep being
// exposed or pushed until they expire. A new definition that would write
// one of its series names supersedes it instead of being refused.
type Catalog[S, I any] struct {
	reg *Registry[S]

	mu   sync.Mutex
	defs map[string]*definition[S, I] // by metric name
	// byFamily finds a definition's data on a series' first sample without
	// taking mu.
	byFamily sync.Map // *Family[S] -> I
}

type definition[S, I any] struct {
	key     string
	exposed []string
	refs    int
	fam     *Family[S]
	info    I
}

// ClashError refuses a definition that would write a series name another
// definition writes.
type ClashError struct {
	// Metric is the refused definition's name, Series the name both would
	// write, Other the definition already writing it.
	Metric, Series, Other string
}

func (e *ClashError) Error() string {
	return fmt.Sprintf("metric %s would write series %s, which metric %s already writes", e.Metric, e.Series, e.Other)
}

// NewCatalog makes an empty catalog over reg.
func NewCatalog[S, I any](reg *Registry[S]) *Catalog[S, I] {
	return &Catalog[S, I]{reg: reg, defs: map[string]*definition[S, I]{}}
}

// Bind registers m under name for a handler: it shares the family of an
// identical definition, refuses (*ClashError) one whose exposed names
// overlap another definition's, and otherwise makes newInfo's data (given
// the new family) the
// definition's, superseding a different definition of the same name.
func (c *Catalog[S, I]) Bind(name string, exposed []string, m *sinks.Metric, scale float64, newInfo func(f *Family[S]) I) (*Family[S], error) {
	key := m.DefinitionKey()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetGoneLocked()
	if cur := c.defs[name]; cur != nil && cur.key == key {
		cur.refs++
		return c.reg.Bind(name, m, scale), nil
	}
	var unbound []string
	for other, d := range c.defs {
		if other == name || !overlap(exposed, d.exposed) {
			continue
		}
		if d.refs > 0 {
			return nil, &ClashError{Metric: name, Series: firstOverlap(exposed, d.exposed), Other: other}
		}
		unbound = append(unbound, other)
	}
	// Unbound definitions in the way are superseded, as a changed
	// definition of their own name would be.
	for _, other := range unbound {
		d := c.defs[other]
		c.reg.Supersede(d.fam)
		c.byFamily.Delete(d.fam)
		delete(c.defs, other)
	}
	d := &definition[S, I]{key: key, exposed: exposed, refs: 1}
	if old := c.defs[name]; old != nil {
		c.byFamily.Delete(old.fam)
	}
	d.fam = c.reg.Bind(name, m, scale) // supersedes a different definition
	d.info = newInfo(d.fam)
	c.defs[name] = d
	c.byFamily.Store(d.fam, d.info)
	return d.fam, nil
}

// Unbind releases a binding from Bind. The last one leaves the definition
// and its series in place until they expire (Registry.Unbind).
func (c *Catalog[S, I]) Unbind(b sinks.Binding) {
	f, ok := b.(*Family[S])
	if !ok {
		return
	}
	c.reg.Unbind(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.defs[f.Name]; cur != nil && cur.fam == f {
		cur.refs--
	}
	c.forgetGoneLocked()
}

// forgetGoneLocked drops the definitions whose family the registry removed
// (unbound, then emptied by expiry). Under mu.
func (c *Catalog[S, I]) forgetGoneLocked() {
	for name, d := range c.defs {
		if d.refs <= 0 && !c.reg.Contains(d.fam) {
			c.byFamily.Delete(d.fam)
			delete(c.defs, name)
		}
	}
}

func overlap(a, b []string) bool { return firstOverlap(a, b) != "" }

func firstOverlap(a, b []string) string {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return x
			}
		}
	}
	return ""
}

// Info is the data of the definition f belongs to; false once it is gone.
func (c *Catalog[S, I]) Info(f *Family[S]) (I, bool) {
	v, ok := c.byFamily.Load(f)
	if !ok {
		var zero I
		return zero, false
	}
	return v.(I), true
}

// Infos lists the data of every definition whose family is in the
// registry, by metric name.
func (c *Catalog[S, I]) Infos() []I {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetGoneLocked()
	names := make([]string, 0, len(c.defs))
	for n := range c.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]I, len(names))
	for i, n := range names {
		out[i] = c.defs[n].info
	}
	return out
}
