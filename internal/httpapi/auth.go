package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
)

// realm is the basic-auth realm a 401 names.
const realm = `Basic realm="conflux"`

// Every login failure answers with the same error, so that the API does
// not tell unknown users from wrong passwords (nor from guest off
// loopback, nor from a rate-limited address): the log says which it was.
var (
	errNoCredentials  = errors.New("this API needs a user name and password (HTTP basic auth)")
	errBadCredentials = errors.New("bad user name or password")
)

type adminKey struct{}

// adminOnly lets through requests with the basic-auth credentials of an
// administrator, when the broker checks credentials at all.
func (s *Server) adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := s.cfg.Broker
		if !b.AuthEnabled() {
			next.ServeHTTP(w, r)
			return
		}
		name, password, ok := r.BasicAuth()
		if !ok {
			unauthorized(w, errNoCredentials)
			return
		}
		u, err := b.Authenticate(name, password, remoteAddr(r))
		if err != nil {
			s.log.Info("admin API login refused", "user", name, "remote", r.RemoteAddr, "reason", err)
			unauthorized(w, errBadCredentials)
			return
		}
		if !u.IsAdmin() {
			s.log.Info("admin API refused to a user who is not an administrator", "user", name, "remote", r.RemoteAddr,
				"method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, fmt.Errorf("user %s is not an administrator", name))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), adminKey{}, u.Name)))
	})
}

func unauthorized(w http.ResponseWriter, err error) {
	w.Header().Set("WWW-Authenticate", realm)
	writeError(w, http.StatusUnauthorized, err)
}

// adminName is the administrator a request was let through for, for the
// log ("" when credentials are not checked).
func adminName(r *http.Request) string {
	name, _ := r.Context().Value(adminKey{}).(string)
	return name
}

// remoteAddr is the request's peer as a net.Addr, for the broker's
// loopback and rate-limit checks; nil when RemoteAddr is not ip:port,
// which the broker treats as not loopback. Forwarding headers are not
// read: behind a proxy on this host every client would look local.
func remoteAddr(r *http.Request) net.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}
