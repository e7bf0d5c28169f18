package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"unicode/utf8"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
)

// UserList is the answer of GET /api/v1/users, sorted by name; each user
// is auth.User.Public (no hash, no secret).
type UserList struct {
	Users []auth.User `json:"users"`
}

// PutUserRequest is the body of PUT /api/v1/users/{name}. A field left
// out keeps its value, and permissions are never changed here (they have
// their own routes). Password is required to create a user.
type PutUserRequest struct {
	Password *string `json:"password,omitempty"`
	// Tags replace the user's tags; [] removes them all.
	Tags *[]string `json:"tags,omitempty"`
	// RocketSecret replaces the RocketMQ secret key; "" removes it.
	RocketSecret *string `json:"rocketmqSecretKey,omitempty"`
}

// Limits on a user's tags.
const (
	MaxTags     = 32
	MaxTagBytes = 64
)

// Permission is one user's AMQP permissions on one vhost (RabbitMQ's
// configure, write and read regular expressions, see auth.VHostPerm).
type Permission struct {
	User      string `json:"user"`
	VHost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// PermissionList is the answer of GET /api/v1/permissions, sorted by user
// and vhost.
type PermissionList struct {
	Permissions []Permission `json:"permissions"`
}

// PermissionRequest is the body of PUT /api/v1/permissions/{user}. All
// three are required, since one left out would silently deny ("" matches
// no name; ".*" matches every one).
type PermissionRequest struct {
	Configure *string `json:"configure"`
	Write     *string `json:"write"`
	Read      *string `json:"read"`
}

// MQTTACL is a user's MQTT rules in order: the first whose filter covers
// the topic decides, and no match denies (auth.TopicRule). PUT replaces
// the whole list.
type MQTTACL struct {
	Rules []auth.TopicRule `json:"rules"`
}

func (s *Server) listUsers(w http.ResponseWriter, _ *http.Request) {
	us := s.cfg.Broker.Users()
	out := make([]auth.User, 0, len(us))
	for _, u := range us {
		out = append(out, u.Public())
	}
	writeJSON(w, http.StatusOK, UserList{Users: out})
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	if u, ok := s.lookupUser(w, r.PathValue("name")); ok {
		writeJSON(w, http.StatusOK, u.Public())
	}
}

// lookupUser returns the user, or answers 404 and returns false.
func (s *Server) lookupUser(w http.ResponseWriter, name string) (auth.User, bool) {
	u, ok := s.cfg.Broker.LookupUser(name)
	if !ok {
		writeError(w, http.StatusNotFound, noUser(name))
	}
	return u, ok
}

func noUser(name string) error { return fmt.Errorf("%w: %s", broker.ErrNoUser, name) }

func (s *Server) putUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req PutUserRequest
	if !decodeBody(w, r, &req, `{"password": ..., "tags": [...], "rocketmqSecretKey": ...}`) {
		return
	}
	// If-Match: * is HTTP's "only if it exists": `conflux admin users
	// passwd` sends it, so that a mistyped name is not a new user.
	ifMissing := error(nil)
	switch m := r.Header.Get("If-Match"); m {
	case "":
	case "*":
		ifMissing = statusError{http.StatusPreconditionFailed, fmt.Errorf("%w (If-Match: *)", noUser(name))}
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("If-Match %q: only * is supported", m))
		return
	}
	if req.Tags != nil {
		if err := validTags(*req.Tags); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	// Hash before changeUser takes its lock: a hash costs milliseconds on
	// purpose.
	var hash string
	if req.Password != nil {
		if *req.Password == "" {
			writeError(w, http.StatusBadRequest, errors.New("the password must not be empty"))
			return
		}
		h, err := s.cfg.Broker.HashPassword(*req.Password)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("password: %w", err))
			return
		}
		hash = h
	}
	var changed []string
	u, created, err := s.changeUser(r, name, ifMissing, func(u *auth.User, exists bool) error {
		if !exists && req.Password == nil {
			return errStatus(http.StatusBadRequest, "user %s does not exist: a new user needs a password", name)
		}
		if req.Password != nil {
			u.PasswordHash = hash
			changed = append(changed, "password")
		}
		if req.Tags != nil {
			u.Tags = slices.Clone(*req.Tags)
			changed = append(changed, "tags")
		}
		if req.RocketSecret != nil {
			u.RocketSecret = *req.RocketSecret
			changed = append(changed, "rocketmq secret key")
		}
		return nil
	})
	if err != nil {
		s.writeWriteError(w, err, "put user", "user", name)
		return
	}
	code, msg := http.StatusOK, "user updated"
	if created {
		code, msg = http.StatusCreated, "user created"
	}
	s.log.Info(msg, "user", name, "changed", changed, "tags", u.Tags, "by", adminName(r))
	writeJSON(w, code, u.Public())
}

func validTags(tags []string) error {
	if len(tags) > MaxTags {
		return fmt.Errorf("more than %d tags", MaxTags)
	}
	for _, t := range tags {
		if t == "" || len(t) > MaxTagBytes || !utf8.ValidString(t) {
			return fmt.Errorf("bad tag %q: want 1 to %d bytes of UTF-8", t, MaxTagBytes)
		}
	}
	return nil
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := func() error {
		s.usersMu.Lock()
		defer s.usersMu.Unlock()
		u, ok := s.cfg.Broker.LookupUser(name)
		if !ok {
			return noUser(name)
		}
		if u.IsAdmin() {
			if err := s.keepAnAdmin(name); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
		defer cancel()
		return s.cfg.Broker.DeleteUser(ctx, name)
	}()
	if err != nil {
		s.writeWriteError(w, err, "delete user", "user", name)
		return
	}
	s.log.Info("user deleted", "user", name, "by", adminName(r))
	writeNoContent(w)
}

// changeUser reads user name, lets change edit it and stores the result,
// validated. It holds usersMu throughout, so two changes through this node
// do not undo each other. A missing user fails with ifMissing, or, when
// that is nil, is created: change then starts from a user with just the
// name. It returns the user stored and whether it is new.
func (s *Server) changeUser(r *http.Request, name string, ifMissing error, change func(u *auth.User, exists bool) error) (auth.User, bool, error) {
	if err := auth.ValidName(name); err != nil {
		return auth.User{}, false, statusError{http.StatusBadRequest, err}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	b := s.cfg.Broker
	old, exists := b.LookupUser(name)
	if !exists && ifMissing != nil {
		return auth.User{}, false, ifMissing
	}
	u, wasAdmin := old, old.IsAdmin() // change may edit u's maps: old is not read after it
	if !exists {
		u = auth.User{Name: name}
	}
	if err := change(&u, exists); err != nil {
		return auth.User{}, false, err
	}
	if wasAdmin && !u.IsAdmin() {
		if err := s.keepAnAdmin(old.Name); err != nil {
			return auth.User{}, false, err
		}
	}
	if err := u.Validate(); err != nil {
		return auth.User{}, false, statusError{http.StatusBadRequest, err}
	}
	if err := b.PutUser(ctx, u); err != nil {
		return auth.User{}, false, err
	}
	return u, !exists, nil
}

// keepAnAdmin refuses to delete or demote the administrator name when it
// is the only one: no one could use this API after that, and the default
// user is never created again (core/broker/users.go).
func (s *Server) keepAnAdmin(name string) error {
	for _, o := range s.cfg.Broker.Users() {
		if o.Name != name && o.IsAdmin() {
			return nil
		}
	}
	return errStatus(http.StatusConflict, "user %s is the only administrator: make another one first", name)
}

func (s *Server) listPermissions(w http.ResponseWriter, _ *http.Request) {
	out := []Permission{}
	for _, u := range s.cfg.Broker.Users() { // sorted by name
		vhosts := make([]string, 0, len(u.VHosts))
		for vh := range u.VHosts {
			vhosts = append(vhosts, vh)
		}
		slices.Sort(vhosts)
		for _, vh := range vhosts {
			out = append(out, permission(u.Name, vh, u.VHosts[vh]))
		}
	}
	writeJSON(w, http.StatusOK, PermissionList{Permissions: out})
}

func permission(user, vhost string, p auth.VHostPerm) Permission {
	return Permission{User: user, VHost: vhost, Configure: p.Configure, Write: p.Write, Read: p.Read}
}

// vhostParam is the vhost query parameter, "/" when absent.
func vhostParam(r *http.Request) (string, error) {
	q := r.URL.Query()
	if !q.Has("vhost") {
		return "/", nil
	}
	vh := q.Get("vhost")
	if vh == "" || len(vh) > auth.MaxNameBytes || !utf8.ValidString(vh) {
		return "", fmt.Errorf("bad vhost %q: want 1 to %d bytes of UTF-8", vh, auth.MaxNameBytes)
	}
	return vh, nil
}

func (s *Server) putPermission(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("user")
	vhost, err := vhostParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	var req PermissionRequest
	if !decodeBody(w, r, &req, `{"configure": ..., "write": ..., "read": ...}`) {
		return
	}
	if req.Configure == nil || req.Write == nil || req.Read == nil {
		writeError(w, http.StatusBadRequest, errors.New(`configure, write and read are all required ("" matches no name, ".*" every one)`))
		return
	}
	p := auth.VHostPerm{Configure: *req.Configure, Write: *req.Write, Read: *req.Read}
	_, _, err = s.changeUser(r, name, noUser(name), func(u *auth.User, _ bool) error {
		if u.VHosts == nil {
			u.VHosts = map[string]auth.VHostPerm{}
		}
		u.VHosts[vhost] = p
		return nil
	})
	if err != nil {
		s.writeWriteError(w, err, "set permissions", "user", name, "vhost", vhost)
		return
	}
	s.log.Info("permissions set", "user", name, "vhost", vhost, "configure", p.Configure, "write", p.Write, "read", p.Read,
		"by", adminName(r))
	writeJSON(w, http.StatusOK, permission(name, vhost, p))
}

func (s *Server) deletePermission(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("user")
	vhost, err := vhostParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	_, _, err = s.changeUser(r, name, noUser(name), func(u *auth.User, _ bool) error {
		if _, ok := u.VHosts[vhost]; !ok {
			return errStatus(http.StatusNotFound, "user %s has no permissions on vhost %q", name, vhost)
		}
		delete(u.VHosts, vhost)
		return nil
	})
	if err != nil {
		s.writeWriteError(w, err, "clear permissions", "user", name, "vhost", vhost)
		return
	}
	s.log.Info("permissions cleared", "user", name, "vhost", vhost, "by", adminName(r))
	writeNoContent(w)
}

func (s *Server) getMQTTACL(w http.ResponseWriter, r *http.Request) {
	if u, ok := s.lookupUser(w, r.PathValue("name")); ok {
		writeJSON(w, http.StatusOK, mqttACL(u))
	}
}

func mqttACL(u auth.User) MQTTACL {
	if u.MQTT == nil {
		return MQTTACL{Rules: []auth.TopicRule{}}
	}
	return MQTTACL{Rules: u.MQTT}
}

func (s *Server) putMQTTACL(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req MQTTACL
	if !decodeBody(w, r, &req, `{"rules": [{"allow": ..., "action": ..., "filter": ...}, ...]}`) {
		return
	}
	if req.Rules == nil {
		writeError(w, http.StatusBadRequest, errors.New("rules is required ([] removes every rule)"))
		return
	}
	u, _, err := s.changeUser(r, name, noUser(name), func(u *auth.User, _ bool) error {
		u.MQTT = slices.Clip(req.Rules)
		if len(u.MQTT) == 0 {
			u.MQTT = nil
		}
		return nil
	})
	if err != nil {
		s.writeWriteError(w, err, "set MQTT rules", "user", name)
		return
	}
	s.log.Info("MQTT rules set", "user", name, "rules", len(u.MQTT), "by", adminName(r))
	writeJSON(w, http.StatusOK, mqttACL(u))
}

func (s *Server) getRocketACL(w http.ResponseWriter, r *http.Request) {
	if u, ok := s.lookupUser(w, r.PathValue("name")); ok {
		writeJSON(w, http.StatusOK, u.Rocket)
	}
}

func (s *Server) putRocketACL(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req auth.RocketPerms
	if !decodeBody(w, r, &req, `{"defaultTopicPerm": ..., "defaultGroupPerm": ..., "topicPerms": {...}, "groupPerms": {...}}`) {
		return
	}
	u, _, err := s.changeUser(r, name, noUser(name), func(u *auth.User, _ bool) error {
		u.Rocket = req
		return nil
	})
	if err != nil {
		s.writeWriteError(w, err, "set RocketMQ permissions", "user", name)
		return
	}
	s.log.Info("RocketMQ permissions set", "user", name, "default_topic", u.Rocket.DefaultTopic,
		"default_group", u.Rocket.DefaultGroup, "topics", len(u.Rocket.Topics), "groups", len(u.Rocket.Groups), "by", adminName(r))
	writeJSON(w, http.StatusOK, u.Rocket)
}

func writeNoContent(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
