package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/internal/config"
	"github.com/conflux-mq/conflux/internal/httpapi"
)

// adminTimeout bounds one admin request; it outlasts the server's own
// bound on a write (httpapi.DefaultWriteTimeout), so its answer arrives.
const adminTimeout = httpapi.DefaultWriteTimeout + 5*time.Second

// DefaultAdminAddr is where `conflux admin` looks for a node.
const DefaultAdminAddr = "127.0.0.1:8080"

// Where `conflux admin` finds its credentials when --user and --password
// are not given; like rabbitmqadmin it falls back on guest/guest, which a
// node accepts from loopback only.
const (
	envAdminUser     = "CONFLUX_ADMIN_USER"
	envAdminPassword = "CONFLUX_ADMIN_PASSWORD"
	defaultAdminUser = "guest"
)

// admin holds what every admin subcommand shares.
type admin struct {
	addr     string
	user     string
	password string
	stdout   io.Writer
	stderr   io.Writer
	client   *http.Client
	caFile   string
}

func newAdminCmd(stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *cobra.Command {
	a := &admin{stdout: stdout, stderr: stderr, client: &http.Client{Timeout: adminTimeout}}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Query and change a running node through its HTTP admin API",
		Long: `Query and change a running node through its HTTP admin API (--http-addr,
default 127.0.0.1:8080, or CONFLUX_HTTP_ADDR). The answer is printed as JSON.

Every call logs in as an administrator with HTTP basic auth: --user and
--password, or CONFLUX_ADMIN_USER and CONFLUX_ADMIN_PASSWORD, else guest/guest
(which a node accepts from its own host only).`,
		Args: usageArgs(cobra.NoArgs),
	}
	// The persistent flag set, not the running command's: `users add` and
	// `users passwd` have a --password of their own (the user's), which
	// hides the login one there.
	login := cmd.PersistentFlags()
	cmd.PersistentPreRunE = func(sub *cobra.Command, _ []string) error {
		for _, f := range []struct {
			flag, env string
			v         *string
		}{
			{"http-addr", config.EnvName("http-addr"), &a.addr},
			{"user", envAdminUser, &a.user},
			{"password", envAdminPassword, &a.password},
			{"tls-ca-file", config.EnvName("tls-ca-file"), &a.caFile},
		} {
			if !login.Changed(f.flag) {
				if v, ok := lookupEnv(f.env); ok {
					*f.v = v
				}
			}
		}
		if a.caFile != "" {
			// HTTPS with the cluster's own CA (serve's --tls-ca-file).
			pem, err := os.ReadFile(a.caFile)
			if err != nil {
				return usageError{fmt.Errorf("--tls-ca-file: %w", err)}
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return usageError{fmt.Errorf("--tls-ca-file %s holds no PEM certificate", a.caFile)}
			}
			a.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
			if !strings.Contains(a.addr, "://") {
				a.addr = "https://" + a.addr
			}
		}
		if sub.LocalNonPersistentFlags().Lookup("password") != nil && a.user != defaultAdminUser {
			if _, ok := lookupEnv(envAdminPassword); !ok {
				return usageError{fmt.Errorf("%s: --password is the password of the user being changed here: give %s's own in %s",
					sub.CommandPath(), a.user, envAdminPassword)}
			}
		}
		return nil
	}
	cmd.PersistentFlags().StringVar(&a.addr, "http-addr", DefaultAdminAddr, "the node's HTTP address (host:port or URL; an empty or wildcard host means 127.0.0.1)")
	cmd.PersistentFlags().StringVar(&a.user, "user", defaultAdminUser, "administrator to log in as (or "+envAdminUser+")")
	cmd.PersistentFlags().StringVar(&a.caFile, "tls-ca-file", "", "talk HTTPS, trusting these PEM CA certificates (a node with --tls-cert-file serves HTTPS)")
	cmd.PersistentFlags().StringVar(&a.password, "password", defaultAdminUser,
		"its password (or "+envAdminPassword+", better: a flag shows in ps; on users add and passwd only the variable)")

	cmd.AddCommand(&cobra.Command{
		Use:   "cluster",
		Short: "Show the Raft group as this node sees it: members, roles, leader, term",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), http.MethodGet, "/api/v1/cluster", nil)
		},
	})

	topics := &cobra.Command{
		Use:   "topics",
		Short: "List topics (the default) or create one",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), http.MethodGet, "/api/v1/topics", nil)
		},
	}
	topics.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List topics",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), http.MethodGet, "/api/v1/topics", nil)
		},
	})
	var queues uint32
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a topic (an existing one with the same queues is fine)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), http.MethodPost, "/api/v1/topics",
				httpapi.CreateTopicRequest{Name: args[0], Queues: queues})
		},
	}
	create.Flags().Uint32Var(&queues, "queues", httpapi.DefaultQueues, fmt.Sprintf("number of queues, 1 to %d", httpapi.MaxQueues))
	topics.AddCommand(create)
	cmd.AddCommand(topics)

	dlq := &cobra.Command{
		Use:   "dlq",
		Short: "Work with dead-lettered messages",
		Args:  usageArgs(cobra.NoArgs),
	}
	var dlqQueue uint32
	resend := &cobra.Command{
		Use:   "resend DLQ_TOPIC OFFSET",
		Short: "Put the dead letter at OFFSET of DLQ_TOPIC (e.g. %DLQ%group) back on its original topic",
		Args:  usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			off, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("offset %q: %w", args[1], err)}
			}
			return a.call(cmd.Context(), http.MethodPost, "/api/v1/dlq/resend",
				httpapi.ResendDeadLetterRequest{Topic: args[0], Queue: dlqQueue, Offset: off})
		},
	}
	resend.Flags().Uint32Var(&dlqQueue, "queue", 0, "queue of the dead-letter topic")
	dlq.AddCommand(resend)
	cmd.AddCommand(dlq)
	cmd.AddCommand(a.usersCmd(), a.permissionsCmd(), a.mqttACLCmd(), a.rocketACLCmd())
	return cmd
}

// call sends one request and prints the JSON answer; a non-2xx answer is
// printed to stderr and fails the command.
func (a *admin) call(ctx context.Context, method, path string, body any) error {
	return a.callWith(ctx, method, path, body, nil)
}

// callWith is call with more request headers.
func (a *admin) callWith(ctx context.Context, method, path string, body any, header http.Header) error {
	base, err := baseURL(a.addr)
	if err != nil {
		return usageError{err}
	}
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.SetBasicAuth(a.user, a.password)
	res, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, base+path, err)
	}
	switch {
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden:
		return a.refused(res, data)
	case res.StatusCode/100 != 2:
		_, _ = a.stderr.Write(data)
		return fmt.Errorf("%s %s: %s", method, base+path, res.Status)
	case len(bytes.TrimSpace(data)) == 0: // 204 after a delete
		return nil
	}
	var out bytes.Buffer
	if json.Indent(&out, bytes.TrimSpace(data), "", "  ") != nil {
		return fmt.Errorf("%s %s: the answer is not JSON: %.200q", method, base+path, data)
	}
	out.WriteByte('\n')
	_, err = a.stdout.Write(out.Bytes())
	return err
}

// refused prints a 401 or 403 as one line that says what to do about it,
// and fails the command.
func (a *admin) refused(res *http.Response, data []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	line := fmt.Sprintf("conflux admin: %s: %s", res.Status, msg)
	if res.StatusCode == http.StatusUnauthorized {
		line += " (use --user/--password or " + envAdminUser + "/" + envAdminPassword + ")"
	} else {
		line += " (log in as a user with the administrator tag)"
	}
	fmt.Fprintln(a.stderr, line)
	return exitError{exitFailure}
}

// baseURL turns --http-addr into a URL: a URL stays as it is; host:port
// gets http://, with 127.0.0.1 for an empty or wildcard host (serve's
// --http-addr :8080 is reached at 127.0.0.1:8080).
func baseURL(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("no --http-addr to talk to")
	}
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/"), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--http-addr %q: want host:port or a URL: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// userPath is the API path of a user, with the name escaped for the URL.
func userPath(name string, rest ...string) string {
	return "/api/v1/users/" + strings.Join(append([]string{url.PathEscape(name)}, rest...), "/")
}

func (a *admin) usersCmd() *cobra.Command {
	list := func(cmd *cobra.Command, _ []string) error {
		return a.call(cmd.Context(), http.MethodGet, "/api/v1/users", nil)
	}
	users := &cobra.Command{
		Use:   "users",
		Short: "List users (the default), add, change or delete one",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  list,
	}
	users.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List users (no password hashes or secrets)",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  list,
	})

	var req httpapi.PutUserRequest
	var password, secret string
	var tags []string
	add := &cobra.Command{
		Use:   "add NAME --password P [--tags administrator] [--rocketmq-secret-key S]",
		Short: "Create a user, or change an existing user's password, tags or secret (what is not given is kept)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if f.Changed("password") {
				req.Password = &password
			}
			if f.Changed("tags") {
				req.Tags = &tags
			}
			if f.Changed("rocketmq-secret-key") {
				req.RocketSecret = &secret
			}
			return a.call(cmd.Context(), http.MethodPut, userPath(args[0]), req)
		},
	}
	// This --password hides the persistent one (the login's) on this
	// command, which then logs in with CONFLUX_ADMIN_PASSWORD or as guest.
	add.Flags().StringVar(&password, "password", "", "the user's password (required for a new user)")
	add.Flags().StringSliceVar(&tags, "tags", nil, `comma-separated tags; "administrator" may use this API and everything else ("" removes all)`)
	add.Flags().StringVar(&secret, "rocketmq-secret-key", "", `the user's RocketMQ SecretKey (AccessKey = NAME; "" removes it)`)
	users.AddCommand(add)

	var newPassword string
	passwd := &cobra.Command{
		Use:   "passwd NAME --password P",
		Short: "Change a user's password (the user must exist)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("password") {
				return usageError{errors.New("passwd needs --password")}
			}
			// If-Match: * so that a mistyped name is an error, not a new user.
			return a.callWith(cmd.Context(), http.MethodPut, userPath(args[0]),
				httpapi.PutUserRequest{Password: &newPassword}, http.Header{"If-Match": {"*"}})
		},
	}
	passwd.Flags().StringVar(&newPassword, "password", "", "the new password")
	users.AddCommand(passwd)

	users.AddCommand(&cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a user (not the only administrator)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), http.MethodDelete, userPath(args[0]), nil)
		},
	})
	return users
}

func (a *admin) permissionsCmd() *cobra.Command {
	list := func(cmd *cobra.Command, _ []string) error {
		return a.call(cmd.Context(), http.MethodGet, "/api/v1/permissions", nil)
	}
	perms := &cobra.Command{
		Use:   "permissions",
		Short: "List (the default), set or clear users' AMQP permissions per vhost",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  list,
	}
	perms.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List every user's AMQP permissions",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  list,
	})
	vhostPath := func(name, vhost string) string {
		return "/api/v1/permissions/" + url.PathEscape(name) + "?" + url.Values{"vhost": {vhost}}.Encode()
	}

	var vhost, configure, write, read string
	set := &cobra.Command{
		Use:   "set NAME [--vhost /] --configure RE --write RE --read RE",
		Short: `Set a user's permissions on a vhost: RabbitMQ's regular expressions over exchange and queue names ("" matches none, ".*" all)`,
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, f := range []string{"configure", "write", "read"} {
				if !cmd.Flags().Changed(f) {
					return usageError{fmt.Errorf(`permissions set needs --configure, --write and --read (--%s "" for none)`, f)}
				}
			}
			return a.call(cmd.Context(), http.MethodPut, vhostPath(args[0], vhost),
				httpapi.PermissionRequest{Configure: &configure, Write: &write, Read: &read})
		},
	}
	set.Flags().StringVar(&vhost, "vhost", "/", "the vhost")
	set.Flags().StringVar(&configure, "configure", "", "names the user may declare and delete")
	set.Flags().StringVar(&write, "write", "", "names the user may publish to")
	set.Flags().StringVar(&read, "read", "", "names the user may consume from")
	perms.AddCommand(set)

	var clearVHost string
	clearCmd := &cobra.Command{
		Use:   "clear NAME [--vhost /]",
		Short: "Remove a user's permissions on a vhost (the user can no longer open it)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), http.MethodDelete, vhostPath(args[0], clearVHost), nil)
		},
	}
	clearCmd.Flags().StringVar(&clearVHost, "vhost", "/", "the vhost")
	perms.AddCommand(clearCmd)
	return perms
}

func (a *admin) mqttACLCmd() *cobra.Command {
	acl := &cobra.Command{
		Use:   "mqtt-acl",
		Short: "Show or replace a user's MQTT rules",
		Args:  usageArgs(cobra.NoArgs),
	}
	acl.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show a user's MQTT rules, in the order they are checked",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), http.MethodGet, userPath(args[0], "mqtt-acl"), nil)
		},
	})
	var rules []string
	var clearAll bool
	set := &cobra.Command{
		Use:   "set NAME --rule 'allow publish devices/%u/#' [--rule ...] | --clear",
		Short: "Replace a user's MQTT rules: the first rule whose filter covers a topic decides, no match denies",
		Long: `Replace a user's MQTT rules with the --rule flags, in order. Each is
"allow|deny publish|subscribe|all FILTER"; %u in FILTER is the user name and
%c the client id. The first rule whose filter covers the topic decides; a
topic no rule covers is denied. --clear removes every rule.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(rules) == 0 && !clearAll {
				return usageError{errors.New("mqtt-acl set needs at least one --rule, or --clear to remove every rule")}
			}
			if len(rules) > 0 && clearAll {
				return usageError{errors.New("mqtt-acl set: --rule and --clear exclude each other")}
			}
			body := httpapi.MQTTACL{Rules: []auth.TopicRule{}}
			for _, r := range rules {
				tr, err := parseMQTTRule(r)
				if err != nil {
					return usageError{err}
				}
				body.Rules = append(body.Rules, tr)
			}
			return a.call(cmd.Context(), http.MethodPut, userPath(args[0], "mqtt-acl"), body)
		},
	}
	// A string array, not a slice: a comma is no separator in a rule.
	set.Flags().StringArrayVar(&rules, "rule", nil, `"allow|deny publish|subscribe|all FILTER", repeated in order`)
	set.Flags().BoolVar(&clearAll, "clear", false, "remove every rule")
	acl.AddCommand(set)
	return acl
}

// parseMQTTRule reads "allow|deny publish|subscribe|all FILTER"; the
// filter is the rest of the line, spaces included.
func parseMQTTRule(s string) (auth.TopicRule, error) {
	verb, rest, _ := strings.Cut(strings.TrimSpace(s), " ")
	action, filter, _ := strings.Cut(strings.TrimLeft(rest, " "), " ")
	filter = strings.TrimLeft(filter, " ")
	var r auth.TopicRule
	switch verb {
	case "allow":
		r.Allow = true
	case "deny":
	default:
		return r, fmt.Errorf("--rule %q: want allow|deny publish|subscribe|all FILTER", s)
	}
	switch action {
	case auth.ActPublish, auth.ActSubscribe, auth.ActAll:
	default:
		return r, fmt.Errorf("--rule %q: action %q: want publish, subscribe or all", s, action)
	}
	if filter == "" {
		return r, fmt.Errorf("--rule %q: no topic filter", s)
	}
	r.Action, r.Filter = action, filter
	return r, nil
}

func (a *admin) rocketACLCmd() *cobra.Command {
	acl := &cobra.Command{
		Use:   "rocketmq-acl",
		Short: "Show or replace a user's RocketMQ topic and group permissions",
		Args:  usageArgs(cobra.NoArgs),
	}
	acl.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show a user's RocketMQ permissions",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), http.MethodGet, userPath(args[0], "rocketmq-acl"), nil)
		},
	})
	var defTopic, defGroup string
	var topics, groups []string
	set := &cobra.Command{
		Use:   "set NAME [--default-topic PERM] [--default-group PERM] [--topic NAME=PERM ...] [--group NAME=PERM ...]",
		Short: "Replace a user's RocketMQ permissions (PERM: DENY, PUB, SUB or PUB|SUB), as plain_acl.yml has them",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := auth.RocketPerms{DefaultTopic: strings.ToUpper(defTopic), DefaultGroup: strings.ToUpper(defGroup)}
			var err error
			if body.Topics, err = parsePerms("--topic", topics); err != nil {
				return usageError{err}
			}
			if body.Groups, err = parsePerms("--group", groups); err != nil {
				return usageError{err}
			}
			return a.call(cmd.Context(), http.MethodPut, userPath(args[0], "rocketmq-acl"), body)
		},
	}
	set.Flags().StringVar(&defTopic, "default-topic", "", "permission on topics not named by --topic (default DENY)")
	set.Flags().StringVar(&defGroup, "default-group", "", "permission on groups not named by --group (default DENY)")
	set.Flags().StringArrayVar(&topics, "topic", nil, "NAME=PERM for one topic, repeated")
	set.Flags().StringArrayVar(&groups, "group", nil, "NAME=PERM for one consumer or producer group, repeated")
	acl.AddCommand(set)
	return acl
}

// parsePerms reads NAME=PERM flags into a map (nil when there are none).
func parsePerms(flag string, vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(vals))
	for _, v := range vals {
		name, perm, ok := strings.Cut(v, "=")
		if !ok || name == "" || perm == "" {
			return nil, fmt.Errorf("%s %q: want NAME=PERM", flag, v)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("%s %s given twice", flag, name)
		}
		m[name] = strings.ToUpper(perm)
	}
	return m, nil
}
