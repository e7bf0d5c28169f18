// Command conflux is the Conflux broker: `conflux serve` runs a node,
// `conflux admin` talks to a running node's HTTP admin API, and `conflux
// version` says what was built.
//
// The command line is built with github.com/spf13/cobra (Apache-2.0) and its
// github.com/spf13/pflag (BSD-3-Clause); internal/config layers CONFLUX_*
// environment variables and the --config YAML file (go.yaml.in/yaml/v3,
// MIT/Apache-2.0) under the flags. We evaluated github.com/peterbourgon/ff/v4
// first, since it does flags > env > config file by itself and is small, and
// chose cobra because:
//
//   - ff's parser reads `--flag=` (explicit empty value) as "value missing"
//     and takes the next argument as the value, so `--namesrv-addr=
//     --broker-addr=` sets namesrv-addr to "--broker-addr=" (ff issue #138,
//     fix PR #139 still open). The command-line contract (docs/architecture.md) makes the empty address the way to
//     disable a listener, so this would break the documented command line;
//     pflag treats `--flag=` as the empty string.
//   - ff v4 has no release since v4.0.0-alpha.4 (September 2023); the tag
//     still reads environment variables with os.Getenv, so an empty
//     CONFLUX_MQTT_ADDR= could not disable a listener either (fixed on main
//     in July 2025, untagged). cobra v1.10 and pflag v1.0 are released,
//     widely used (kubectl, etcd, docker) and maintained.
//   - What ff would add over pflag is small: for each flag not given on the
//     command line, look up its variable, else its key in the file
//     (config.Resolve, a loop of a dozen lines; the YAML parsing is the
//     library's).
//
// cobra's only other dependency in our build is inconshreveable/mousetrap
// (Apache-2.0, Windows only).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set with -ldflags "-X main.version=... -X main.commit=..." (see Makefile).
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the broker or a request failed
	exitUsage   = 2 // bad flags or configuration
)

// usageError marks errors in the command line or configuration.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError carries an exit code chosen by a command that has already
// reported why.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// run is main with its environment passed in, returning the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	root := &cobra.Command{
		Use:   "conflux",
		Short: "Conflux: MQTT, AMQP and RocketMQ front doors over one Raft-replicated commit log",
		// Errors are printed once, below; usage only when asked for.
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCmd(stderr, lookupEnv), newAdminCmd(stdout, stderr, lookupEnv), newVersionCmd(stdout), newBenchCmd(stdout))

	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "conflux: %v\nRun 'conflux --help' for usage.\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "conflux: %v\n", err)
		return exitFailure
	}
}

// usageArgs makes a positional-argument check's complaint a usage error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			v, c := versionInfo()
			_, err := fmt.Fprintf(stdout, "conflux %s\ncommit %s\n%s %s/%s\n", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// versionInfo is the -ldflags version and commit, falling back on what
// the go command recorded: the module version when built with `go install
// ...@version`, and the VCS revision when built in a checkout (unless
// -buildvcs=false).
func versionInfo() (v, c string) {
	v, c = version, commit
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v, c
	}
	if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	if c == "unknown" {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			c = rev
			if modified == "true" {
				c += "-dirty"
			}
		}
	}
	return v, c
}
