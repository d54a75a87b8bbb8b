package handler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// Deps are what handlers are built with.
type Deps struct {
	Sinks     *sinks.Set
	Factories []sinks.Factory
	// Dedup, when set, is the window of recent dedup_ids every handler
	// reports to (ids are scoped by the handler's digest).
	Dedup *dedup.Window
	// OnClose, when set, is told when an evicted handler has closed (its
	// last request done, its bindings released behind the queued samples).
	OnClose func(d Digest)
}

// Cache holds the handlers of the configs Mixer sends, at most Size of them
// and at most MaxBytes of their estimated memory (EstimateBytes). A handler
// unused for IdleTimeout, or the least recently used one when the cache is
// full, is evicted: it is closed once its last request is done, which
// releases its bindings behind the samples already queued (its series stay
// in their sinks). A config whose estimate alone exceeds MaxBytes is
// refused. A config that fails to build is remembered too, so that Mixer
// sending it again costs a lookup, not a rebuild.
type Cache struct {
	deps        Deps
	size        int
	maxBytes    int64
	idleTimeout time.Duration
	now         func() time.Time
	// OnBuild is told about every build, for telemetry and logs.
	onBuild func(d Digest, p *config.Params, sinks []string, err error)

	mu      sync.RWMutex
	entries map[Digest]*entry
	bytes   int64 // estimated, of the entries
	// recent remembers the last config's bytes, so that the common case of
	// one config sent over and over skips hashing.
	recent    []byte
	recentURL []byte
	recentE   *entry
}

type entry struct {
	h        *Handler
	err      error
	lastUsed time.Time
	cost     int64
}

// failureCost is what a remembered failure is counted for: its error.
const failureCost = 1 << 10

// CacheOptions configure NewCache.
type CacheOptions struct {
	Size int
	// MaxBytes bounds the estimated memory of the handlers (0: no bound).
	MaxBytes    int64
	IdleTimeout time.Duration
	Now         func() time.Time
	// OnBuild is told about every build: the params, the names of the
	// sinks they feed, or the error.
	OnBuild func(d Digest, p *config.Params, sinks []string, err error)
}

// NewCache makes an empty cache.
func NewCache(deps Deps, o CacheOptions) *Cache {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnBuild == nil {
		o.OnBuild = func(Digest, *config.Params, []string, error) {}
	}
	return &Cache{deps: deps, size: max(o.Size, 1), maxBytes: o.MaxBytes, idleTimeout: o.IdleTimeout, now: o.Now, onBuild: o.OnBuild,
		entries: map[Digest]*entry{}}
}

// Get returns the handler for a request's adapter_config, building it on
// first sight. The caller must call Done on the handler when the request is
// finished. A config that cannot be built gives an error wrapping
// config.ErrInvalid.
func (c *Cache) Get(a handlemetric.Any) (*Handler, error) {
	now := c.now()
	c.mu.RLock()
	if e := c.recentE; e != nil && a.Present && bytes.Equal(a.Value, c.recent) && bytes.Equal(a.TypeURL, c.recentURL) {
		h, err := e.h, e.err
		if h != nil {
			h.acquire(now)
		}
		c.mu.RUnlock()
		return h, err
	}
	c.mu.RUnlock()
	return c.GetByDigest(DigestOf(a), a)
}

// GetByDigest is Get for a config whose digest the caller computed once
// (the handlers of a config directory): no hashing per call.
func (c *Cache) GetByDigest(d Digest, a handlemetric.Any) (*Handler, error) {
	now := c.now()
	c.mu.RLock()
	e, ok := c.entries[d]
	if ok && e.h != nil {
		e.h.acquire(now)
	}
	c.mu.RUnlock()
	if !ok {
		e = c.build(d, a, now)
		if e.h != nil {
			// build acquired it under the write lock.
			return e.h, nil
		}
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.h, nil
}

func (c *Cache) build(d Digest, a handlemetric.Any, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[d]; ok { // built meanwhile
		if e.h != nil {
			e.h.acquire(now)
		}
		return e
	}
	e := &entry{lastUsed: now, cost: failureCost}
	p, err := config.Decode(a.Present, a.TypeURL, a.Value)
	if err == nil {
		p, err = config.Normalize(p)
	}
	if err == nil {
		err = c.makeRoom(p, len(a.Value), e)
	}
	if err == nil {
		var h *Handler
		h, err = build(d, p, &c.deps)
		if err == nil {
			e.h = h
			h.acquire(now)
		}
	}
	if err != nil {
		e.cost = failureCost
	}
	e.err = err
	var names []string
	if e.h != nil {
		names = e.h.Sinks()
	}
	c.onBuild(d, p, names, err)
	if len(c.entries) >= c.size {
		c.evictOldest()
	}
	for c.maxBytes > 0 && c.bytes+e.cost > c.maxBytes && len(c.entries) > 0 {
		c.evictOldest()
	}
	c.entries[d] = e
	c.bytes += e.cost
	if a.Present {
		c.recent = append(c.recent[:0], a.Value...)
		c.recentURL = append(c.recentURL[:0], a.TypeURL...)
		c.recentE = e
	}
	return e
}

// makeRoom estimates what a handler of p takes (e.cost) and evicts the
// least recently used handlers until it fits in MaxBytes, before it is
// built; a config that cannot fit even alone is refused (ErrTooLarge,
// invalid). Under the write lock.
func (c *Cache) makeRoom(p *config.Params, configBytes int, e *entry) error {
	backends := 0
	if uses, err := sinks.Resolve(p, c.deps.Factories); err == nil {
		backends = len(uses)
	}
	e.cost = EstimateBytes(p, configBytes, backends)
	if c.maxBytes <= 0 {
		return nil
	}
	if e.cost > c.maxBytes {
		return invalid(fmt.Errorf("%w: its %d metrics of %d bytes take about %d MiB once built, more than the handler cache's %d MiB (--handler-cache-max-bytes)",
			ErrTooLarge, len(p.Metrics), configBytes, e.cost>>20, c.maxBytes>>20))
	}
	for c.bytes+e.cost > c.maxBytes && len(c.entries) > 0 {
		c.evictOldest()
	}
	return nil
}

func (c *Cache) evictOldest() {
	var oldest Digest
	var oldestAt time.Time
	first := true
	for d, e := range c.entries {
		at := e.lastUsed
		if e.h != nil {
			at = time.Unix(0, e.h.lastUsed.Load())
		}
		if first || at.Before(oldestAt) {
			oldest, oldestAt, first = d, at, false
		}
	}
	c.removeLocked(oldest)
}

func (c *Cache) removeLocked(d Digest) {
	e, ok := c.entries[d]
	if !ok {
		return
	}
	delete(c.entries, d)
	c.bytes -= e.cost
	if c.recentE == e {
		c.recentE, c.recent, c.recentURL = nil, c.recent[:0], c.recentURL[:0]
	}
	if e.h != nil {
		e.h.evict()
	}
}

// EvictIdle evicts the handlers (and remembered failures) unused for longer
// than the idle timeout and returns how many.
func (c *Cache) EvictIdle() int {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for d, e := range c.entries {
		last := e.lastUsed
		if e.h != nil {
			last = time.Unix(0, e.h.lastUsed.Load())
		}
		if now.Sub(last) > c.idleTimeout {
			c.removeLocked(d)
			n++
		}
	}
	return n
}

// Run evicts idle handlers until ctx is done.
func (c *Cache) Run(ctx context.Context) {
	interval := min(max(c.idleTimeout/4, time.Second), time.Minute)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.EvictIdle()
		}
	}
}

// Len is the number of cached configs (handlers and failures).
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Bytes is the estimated memory of the cached handlers (EstimateBytes).
func (c *Cache) Bytes() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}

// Handlers lists the cached handlers, for the debug endpoint.
func (c *Cache) Handlers() []*Handler {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*Handler
	for _, e := range c.entries {
		if e.h != nil {
			out = append(out, e.h)
		}
	}
	return out
}

// Validate builds nothing: it decodes, normalizes and checks a config against
// the rules of every sink it names (InfrastructureBackend.Validate).
func (c *Cache) Validate(a handlemetric.Any) error {
	p, err := config.Decode(a.Present, a.TypeURL, a.Value)
	if err != nil {
		return err
	}
	if p, err = config.Normalize(p); err != nil {
		return err
	}
	_, err = resolve(p, c.deps.Factories)
	return err
}

// resolve has the backends normalize their blocks of p (sinks.Resolve) and
// checks p against the rules of every backend it sends to.
func resolve(p *config.Params, factories []sinks.Factory) ([]sinks.Use, error) {
	uses, err := sinks.Resolve(p, factories)
	if err != nil {
		return nil, err
	}
	defs := MetricsOf(p)
	var errs []error
	for _, u := range uses {
		if err := u.Factory.Check(p, defs); err != nil {
			errs = append(errs, invalid(err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return uses, nil
}

// invalid marks err as an invalid handler config (InvalidArgument), once.
func invalid(err error) error {
	if errors.Is(err, config.ErrInvalid) {
		return err
	}
	return fmt.Errorf("%w: %w", config.ErrInvalid, err)
}
