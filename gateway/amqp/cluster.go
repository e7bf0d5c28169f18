package amqp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// In a cluster, deliveries come from the Raft leader (the subscription
// leases are its state). So that clients may connect to any node, a
// follower hands each new connection to the leader's AMQP door, byte for
// byte, as a TCP proxy would (a TLS connection is decrypted here and its
// AMQP bytes go on to the leader's plain door, AdvertiseAddr: the nodes'
// own network is trusted, docs/security.md); and a node that stops
// leading closes its connections that consume, with 320
// CONNECTION_FORCED, so their clients reconnect and land on the new
// leader. Each node announces its door's
// address (Config.AdvertiseAddr) in the replicated records, under
// namespace "amqp", key "node/<id>". A follower that does not know the
// leader's address, or cannot reach it, serves the connection itself
// (publishing works anywhere; its consumers wait for a leader here).

// nodeKey is a node's door address record.
func nodeKey(id uint64) string { return "node/" + strconv.FormatUint(id, 10) }

// announce records this node's door address until it is stored.
func (s *Server) announce() {
	defer s.wg.Done()
	if s.cfg.AdvertiseAddr == "" || s.cfg.NodeID == 0 {
		return
	}
	for {
		if v, ok := s.b.Record(recordNS, nodeKey(s.cfg.NodeID)); ok && string(v) == s.cfg.AdvertiseAddr {
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
		err := s.b.PutRecord(ctx, recordNS, nodeKey(s.cfg.NodeID), []byte(s.cfg.AdvertiseAddr))
		cancel()
		if err == nil || s.ctx.Err() != nil {
			return
		}
		t := time.NewTimer(time.Second) // no leader yet: try again
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
	}
}

// leaderDoor returns the leader's door address when this node is a
// follower that knows it.
func (s *Server) leaderDoor() (string, bool) {
	st := s.b.Status()
	if st.Leader == 0 || st.Leader == st.ID || s.cfg.AdvertiseAddr == "" {
		return "", false
	}
	v, ok := s.b.Record(recordNS, nodeKey(st.Leader))
	if !ok || string(v) == s.cfg.AdvertiseAddr {
		return "", false
	}
	return string(v), true
}

// proxyDialTimeout bounds the dial to the leader's door.
const proxyDialTimeout = 3 * time.Second

// proxyMarker starts a connection one door hands on to another: the
// receiving door serves it itself, so a connection makes one hop at most
// even while two nodes disagree about who leads. It is not an AMQP
// protocol header, and a client that sends it only gets served where it
// connected.
var proxyMarker = [8]byte{'C', 'F', 'L', 'X', 0, 'P', 'R', 'X'}

// proxyMarkerFrom is proxyMarker naming the client: a shortstr with its
// address ("ip:port") follows, then the client's bytes. The leader logs the
// client in with that address (guest only from loopback, failures counted
// per client, not per node), but only when the connection comes from an
// address a node advertises its door on: anyone else could name any
// address.
var proxyMarkerFrom = [8]byte{'C', 'F', 'L', 'X', 1, 'P', 'R', 'X'}

// handOffHeader starts a handed-on connection: the marker, the client's
// address when it has one, then the bytes already read from the client.
func handOffHeader(client net.Addr, first []byte) []byte {
	ap, err := netip.ParseAddrPort(addrString(client))
	if err != nil {
		return append(proxyMarker[:], first...)
	}
	a := ap.String()
	b := append(proxyMarkerFrom[:], byte(len(a)))
	b = append(b, a...)
	return append(b, first...)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// readHandOff reads the client address of proxyMarkerFrom and keeps it if
// the connection comes from a node.
func (c *conn) readHandOff() error {
	n, err := c.r.ReadByte()
	if err != nil {
		return err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(string(b))
	if err != nil {
		return fmt.Errorf("amqp: hand-off names a bad client address %q: %w", b, err)
	}
	if !c.s.fromNode(c.nc.RemoteAddr()) {
		c.s.log.Info("amqp hand-off from an address no node advertises: the client address it names is ignored",
			"remote", c.nc.RemoteAddr().String(), "named", ap.String())
		return nil
	}
	c.from.Store(net.TCPAddrFromAddrPort(ap))
	return nil
}

// resolveTimeout bounds the lookup of a node's advertised host name.
const resolveTimeout = 2 * time.Second

// fromNode reports whether peer's IP is one a voter advertises its AMQP
// door on (a host name is resolved).
func (s *Server) fromNode(peer net.Addr) bool {
	pa, err := netip.ParseAddrPort(addrString(peer))
	if err != nil {
		return false
	}
	ip := pa.Addr().Unmap()
	for _, id := range s.b.Status().Voters {
		v, ok := s.b.Record(recordNS, nodeKey(id))
		if !ok {
			continue
		}
		host, _, err := net.SplitHostPort(string(v))
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if a.Unmap() == ip {
				return true
			}
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, resolveTimeout)
		as, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host) // nil on an error
		cancel()
		for _, a := range as {
			if a.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// handOn hands nc to the leader's door when this node is a follower that
// knows it, and returns nil; else it returns the connection to serve here
// (with what was read of it put back).
func (s *Server) handOn(nc net.Conn) net.Conn {
	addr, ok := s.leaderDoor()
	if !ok {
		return nc
	}
	// The whole deadline, not only the read's: over TLS the first read
	// is the TLS handshake, which writes too.
	_ = nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var first [8]byte
	if _, err := io.ReadFull(nc, first[:]); err != nil {
		_ = nc.Close()
		return nil
	}
	_ = nc.SetDeadline(time.Time{})
	if first == proxyMarker || first == proxyMarkerFrom {
		return nc // handed on to us already: ours
	}
	up, err := net.DialTimeout("tcp", addr, proxyDialTimeout)
	if err == nil {
		_, err = up.Write(handOffHeader(nc.RemoteAddr(), first[:]))
	}
	if err != nil {
		s.log.Warn("leader's AMQP door unreachable: serving the connection here", "leader_addr", addr, "err", err)
		if up != nil {
			_ = up.Close()
		}
		return &prefixed{Conn: nc, r: io.MultiReader(bytes.NewReader(first[:]), nc)}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = up.Close()
		_ = nc.Close()
		return nil
	}
	s.proxied[nc] = up
	s.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		// One side ended: end both, so neither waits on a peer that left.
		_ = dst.Close()
		_ = src.Close()
	}
	wg.Add(2)
	go pipe(up, nc)
	go pipe(nc, up)
	wg.Wait()
	s.mu.Lock()
	delete(s.proxied, nc)
	s.mu.Unlock()
	return nil
}

// prefixed is a connection with bytes already read put back in front.
type prefixed struct {
	net.Conn
	r io.Reader
}

func (p *prefixed) Read(b []byte) (int, error) { return p.r.Read(b) }

// watchLeadership closes this node's consuming connections when it stops
// leading, or while it follows a leader whose door it knows: their
// consumers get nothing here, and on reconnecting they are handed to the
// leader.
func (s *Server) watchLeadership() {
	defer s.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	was := false
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		st := s.b.Status()
		leads := st.Leader != 0 && st.Leader == st.ID
		_, elsewhere := s.leaderDoor()
		// A node that just lost the lead, or a follower whose consumers
		// could be served by a leader it can name: send them there.
		if was && !leads || elsewhere {
			s.mu.Lock()
			var cs []*conn
			for c := range s.conns {
				if c.consuming.Load() > 0 {
					cs = append(cs, c)
				}
			}
			s.mu.Unlock()
			for _, c := range cs {
				c.shutdown(hardErr(codeConnectionForced, "deliveries are served by the leader: reconnect"))
			}
		}
		was = leads
	}
}
