// Package tlsconf builds the TLS configuration every listener shares: one
// certificate and key, an optional CA for client certificates, and the
// client-certificate policy. Certificates are read again on Reload (SIGHUP)
// and whenever their files change, without dropping connections: new
// handshakes use the new files, established connections keep theirs.
package tlsconf

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config names the files and the client-certificate policy.
type Config struct {
	CertFile, KeyFile string
	// CAFile holds the CAs that client (and peer) certificates must chain
	// to; required for ClientAuth "require" and for peer TLS.
	CAFile string
	// ClientAuth: "none" (default), "request" (verified if sent) or
	// "require".
	ClientAuth string
	// PeerCAFile holds the CAs that Raft peers' certificates must chain
	// to (default: CAFile). A CA of its own keeps a certificate issued to
	// a device for client login from ever passing as a peer.
	PeerCAFile string
	// WatchInterval spaces the checks for changed files (2s; -1: off).
	WatchInterval time.Duration
}

// Enabled reports whether a certificate is configured.
func (c Config) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("tls: --tls-cert-file and --tls-key-file go together")
	}
	switch c.ClientAuth {
	case "", "none", "request":
	case "require":
		if c.CAFile == "" {
			return errors.New("tls: --tls-client-auth require needs --tls-ca-file")
		}
	default:
		return fmt.Errorf("tls: --tls-client-auth %q: want none, request or require", c.ClientAuth)
	}
	if !c.Enabled() && (c.CAFile != "" || c.ClientAuth != "" && c.ClientAuth != "none") {
		return errors.New("tls: --tls-ca-file and --tls-client-auth need --tls-cert-file and --tls-key-file")
	}
	return nil
}

// Set is the loaded configuration, swapped whole on reload.
type Set struct {
	cfg Config
	log *slog.Logger
	cur atomic.Pointer[loaded]

	mu      sync.Mutex
	stamps  [4]time.Time
	stop    chan struct{}
	stopped sync.Once
}

type loaded struct {
	cert    tls.Certificate
	cas     *x509.CertPool
	peerCAs *x509.CertPool // cas when no PeerCAFile
}

// Load reads the files. The returned Set serves Server and Client configs
// that always use the latest files; Close stops watching them.
func Load(cfg Config, log *slog.Logger) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("tls: no certificate configured")
	}
	if cfg.WatchInterval == 0 {
		cfg.WatchInterval = 2 * time.Second
	}
	s := &Set{cfg: cfg, log: log, stop: make(chan struct{})}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	if cfg.WatchInterval > 0 {
		go s.watch()
	}
	return s, nil
}

// Reload reads the files again; on an error the previous ones stay.
func (s *Set) Reload() error {
	cert, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s and %s: %w", s.cfg.CertFile, s.cfg.KeyFile, err)
	}
	l := &loaded{cert: cert}
	if l.cas, err = readPool(s.cfg.CAFile); err != nil {
		return err
	}
	l.peerCAs = l.cas
	if s.cfg.PeerCAFile != "" {
		if l.peerCAs, err = readPool(s.cfg.PeerCAFile); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.stamps = s.fileStamps()
	s.mu.Unlock()
	s.cur.Store(l)
	return nil
}

// readPool reads a PEM file of CA certificates ("" gives nil).
func readPool(name string) (*x509.CertPool, error) {
	if name == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("tls: read %s: %w", name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: %s holds no PEM certificate", name)
	}
	return pool, nil
}

func (s *Set) fileStamps() [4]time.Time {
	var out [4]time.Time
	for k, f := range []string{s.cfg.CertFile, s.cfg.KeyFile, s.cfg.CAFile, s.cfg.PeerCAFile} {
		if fi, err := os.Stat(f); err == nil && f != "" {
			out[k] = fi.ModTime()
		}
	}
	return out
}

func (s *Set) watch() {
	t := time.NewTicker(s.cfg.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		changed := s.fileStamps() != s.stamps
		s.mu.Unlock()
		if !changed {
			continue
		}
		if err := s.Reload(); err != nil {
			s.log.Warn("TLS files changed but cannot be loaded; keeping the previous ones", "err", err)
			s.mu.Lock()
			s.stamps = s.fileStamps() // do not retry until they change again
			s.mu.Unlock()
		} else {
			s.log.Info("TLS certificate reloaded", "cert", s.cfg.CertFile)
		}
	}
}

// Close stops watching the files.
func (s *Set) Close() { s.stopped.Do(func() { close(s.stop) }) }

// Server returns the configuration for a listener.
func (s *Set) Server() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l := s.cur.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{l.cert}, ClientCAs: l.cas}
			switch s.cfg.ClientAuth {
			case "request":
				c.ClientAuth = tls.VerifyClientCertIfGiven
			case "require":
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// Peer returns the server and client configurations of mutual TLS
// between Raft peers: both sides present the certificate and require the
// other's to chain to the CA.
func (s *Set) Peer() (server, client *tls.Config, err error) {
	if s.cfg.CAFile == "" && s.cfg.PeerCAFile == "" {
		return nil, nil, errors.New("tls: --peer-tls needs --tls-ca-file or --peer-tls-ca-file")
	}
	server = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l := s.cur.Load()
			return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{l.cert},
				ClientCAs: l.peerCAs, ClientAuth: tls.RequireAndVerifyClientCert}, nil
		},
	}
	client = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Peers are dialled by address, and their certificates need not
		// name it: verify the chain against the cluster's CA here.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			l := s.cur.Load()
			return &l.cert, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return s.verifyChain(raw)
		},
	}
	return server, client, nil
}

func (s *Set) verifyChain(raw [][]byte) error {
	if len(raw) == 0 {
		return errors.New("tls: peer sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for k, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("tls: peer certificate: %w", err)
		}
		certs[k] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: s.cur.Load().peerCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// IsHandshake reports whether b starts a TLS ClientHello record (content
// type 22, version 3.x): what a permissive listener looks at to tell TLS
// from plain bytes on one port.
func IsHandshake(b []byte) bool { return len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03 }

// Sniff reads the first bytes of c without consuming them for the caller:
// it returns whether they start a TLS handshake and a conn that replays them.
func Sniff(c net.Conn, timeout time.Duration) (bool, net.Conn, error) {
	br := bufio.NewReaderSize(c, 16)
	if timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
	}
	head, err := br.Peek(2)
	if timeout > 0 {
		_ = c.SetReadDeadline(time.Time{})
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, c, err
	}
	return IsHandshake(head), &peekedConn{Conn: c, r: br}, nil
}

type peekedConn struct {
	net.Conn
	r io.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }
