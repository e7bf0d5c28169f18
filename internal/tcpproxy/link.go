package tcpproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// link is one forwarded connection: the client's, and the proxy's own to
// the target once dialled.
type link struct {
	client net.Conn
	ctx    context.Context // cancelled by close: stops dialling and waiting
	cancel context.CancelFunc

	mu     sync.Mutex
	up     net.Conn
	closed bool
}

// setUpstream records the target connection, unless the link was closed
// while dialling (then it closes up and reports false).
func (l *link) setUpstream(up net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		up.Close()
		return false
	}
	l.up = up
	return true
}

// close closes both connections, which ends every goroutine of the link:
// reads and writes fail, and waits end on ctx.
func (l *link) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	up := l.up
	l.mu.Unlock()
	l.cancel()
	l.client.Close()
	if up != nil {
		up.Close()
	}
}

// chunk is one read, stamped with when it arrived.
type chunk struct {
	data   []byte
	readAt time.Time
}

// pipe forwards src to dst until src ends, then half-closes dst so the far
// end sees the same EOF.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	ch := make(chan chunk, maxQueuedChunks)
	var reader sync.WaitGroup
	reader.Go(func() { p.readLoop(l, src, ch) })
	p.writeLoop(l, dst, ch)
	reader.Wait()
}

func (p *Proxy) readLoop(l *link, src net.Conn, ch chan<- chunk) {
	defer close(ch)
	buf := make([]byte, chunkBytes)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case ch <- chunk{data: bytes.Clone(buf[:n]), readAt: time.Now()}:
			case <-l.ctx.Done():
				return
			}
		}
		if errors.Is(err, io.EOF) {
			return // the writer half-closes once the queue is drained
		}
		if err != nil {
			l.close()
			return
		}
	}
}

func (p *Proxy) writeLoop(l *link, dst net.Conn, ch <-chan chunk) {
	for c := range ch {
		if !p.waitDelay(l, c.readAt) {
			return
		}
		n, err := dst.Write(c.data)
		p.bytes.Add(int64(n))
		if err != nil {
			l.close()
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok && l.ctx.Err() == nil {
		if err := tc.CloseWrite(); err != nil {
			l.close()
		}
	}
}

// waitDelay waits until the chunk read at readAt is due, or the link closes
// (then it reports false).
func (p *Proxy) waitDelay(l *link, readAt time.Time) bool {
	wait := p.delay() - time.Since(readAt)
	if wait <= 0 {
		return l.ctx.Err() == nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}
