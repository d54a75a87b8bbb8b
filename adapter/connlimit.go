package adapter

import (
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Connection caps: thousands of idle connections must not exhaust the
// process's file descriptors or memory, and must not keep a probe of
// /healthz or a Mixer call out.

// refusingListener caps the open connections of the gRPC server: past the
// cap a new connection is closed at once and counted. Connections already
// open (Mixer's, Envoy's) keep working.
type refusingListener struct {
	net.Listener
	slots   chan struct{}
	refused prometheus.Counter
}

func newRefusingListener(l net.Listener, maxConns int, refused prometheus.Counter) net.Listener {
	return &refusingListener{Listener: l, slots: make(chan struct{}, maxConns), refused: refused}
}

func (l *refusingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &releasingConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			_ = c.Close()
			l.refused.Inc()
		}
	}
}

// releasingConn gives its slot back once closed.
type releasingConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releasingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// idleEvictingListener caps the open connections of the HTTP server. Past
// the cap, the connection that has waited longest without a request in
// progress (a new one that has sent nothing yet, or an idle keep-alive
// one) is closed to make room, and counted: HTTP lets a server close an
// idle connection at any time, and its client reconnects. Only when every
// connection is serving a request is the new one closed at once (counted
// too). Either way the descriptors stay below the cap, and a kubelet's
// /healthz still gets through thousands of idle connections.
type idleEvictingListener struct {
	net.Listener
	max              int
	refused, evicted prometheus.Counter

	mu    sync.Mutex
	open  int
	seq   uint64
	conns map[*trackedConn]struct{}
}

func newIdleEvictingListener(l net.Listener, maxConns int, refused, evicted prometheus.Counter) *idleEvictingListener {
	return &idleEvictingListener{Listener: l, max: maxConns, refused: refused, evicted: evicted, conns: map[*trackedConn]struct{}{}}
}

// trackedConn is a connection of the HTTP server and its state.
type trackedConn struct {
	net.Conn
	l    *idleEvictingListener
	once sync.Once
	// Under l.mu: busy while a request is served; since orders the
	// connections by when they last went idle (or were accepted).
	busy  bool
	since uint64
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.open--
		c.l.mu.Unlock()
	})
	return err
}

func (l *idleEvictingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		var victim *trackedConn
		if l.open >= l.max {
			for t := range l.conns {
				if !t.busy && (victim == nil || t.since < victim.since) {
					victim = t
				}
			}
			if victim == nil {
				l.mu.Unlock()
				_ = c.Close()
				l.refused.Inc()
				continue
			}
			// Out of the count now, so that the new one fits at once.
			delete(l.conns, victim)
			l.open--
			victim.once.Do(func() {})
		}
		l.seq++
		t := &trackedConn{Conn: c, l: l, since: l.seq}
		l.conns[t] = struct{}{}
		l.open++
		l.mu.Unlock()
		if victim != nil {
			_ = victim.Conn.Close()
			l.evicted.Inc()
		}
		return t, nil
	}
}

// connState is the HTTP server's ConnState hook: it tells which
// connections are serving a request.
func (l *idleEvictingListener) connState(c net.Conn, st http.ConnState) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS (web config)
		c = nc.NetConn()
	}
	t, ok := c.(*trackedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateActive:
		t.busy = true
	case http.StateIdle:
		t.busy = false
		l.seq++
		t.since = l.seq
	}
}
