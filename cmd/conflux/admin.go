package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conflux-mq/conflux/internal/config"
	"github.com/conflux-mq/conflux/internal/httpapi"
)

// adminTimeout bounds one admin request; it outlasts the server's own
// bound on a write (httpapi.DefaultWriteTimeout), so its answer arrives.
const adminTimeout = httpapi.DefaultWriteTimeout + 5*time.Second

// DefaultAdminAddr is where `conflux admin` looks for a node.
const DefaultAdminAddr = "127.0.0.1:8080"

// admin holds what every admin subcommand shares.
type admin struct {
	addr   string
	stdout io.Writer
	stderr io.Writer
	client *http.Client
}

func newAdminCmd(stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *cobra.Command {
	a := &admin{stdout: stdout, stderr: stderr, client: &http.Client{Timeout: adminTimeout}}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Query and change a running node through its HTTP admin API",
		Long: `Query and change a running node through its HTTP admin API (--http-addr,
default 127.0.0.1:8080, or CONFLUX_HTTP_ADDR). The answer is printed as JSON.`,
		Args: usageArgs(cobra.NoArgs),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("http-addr") {
				if v, ok := lookupEnv(config.EnvName("http-addr")); ok {
					a.addr = v
				}
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&a.addr, "http-addr", DefaultAdminAddr, "the node's HTTP address (host:port or URL; an empty or wildcard host means 127.0.0.1)")

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
	return cmd
}

// call sends one request and prints the JSON answer; a non-2xx answer is
// printed to stderr and fails the command.
func (a *admin) call(ctx context.Context, method, path string, body any) error {
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
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, base+path, err)
	}
	if res.StatusCode/100 != 2 {
		_, _ = a.stderr.Write(data)
		return fmt.Errorf("%s %s: %s", method, base+path, res.Status)
	}
	var out bytes.Buffer
	if json.Indent(&out, bytes.TrimSpace(data), "", "  ") != nil {
		return fmt.Errorf("%s %s: the answer is not JSON: %.200q", method, base+path, data)
	}
	out.WriteByte('\n')
	_, err = a.stdout.Write(out.Bytes())
	return err
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
