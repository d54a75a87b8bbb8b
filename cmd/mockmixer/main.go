// Command mockmixer plays Istio Mixer against an out-of-process adapter: it reads the same
// handler, instance and rule CRDs and sends HandleMetric calls encoded as Mixer encodes
// them (report), sends hand-written instances (send), or drives load (load). For the
// adapter's Mixer-less mode it plays Envoy: it streams access-log entries (accesslog) or
// drives load with them (accesslog-load).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() { os.Exit(mainCode()) }

// mainCode runs a command and returns its exit status, so that main's
// deferred calls run before os.Exit.
func mainCode() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return run(ctx, os.Args[1:], env{getenv: os.Getenv, stdout: os.Stdout, stderr: os.Stderr, stderrIsTTY: isTerminal(os.Stderr)})
}

// env is what a command may touch of the outside world, so tests can supply their own.
type env struct {
	getenv      func(string) string
	stdout      io.Writer
	stderr      io.Writer
	stderrIsTTY bool
}

const usage = `mockmixer plays Istio Mixer (1.1-1.7) against an out-of-process adapter such as meshmetrics.

Usage:
  mockmixer report [flags]   evaluate rules and instances on attribute bags and send HandleMetric as Mixer does
  mockmixer send [flags]     send instances written by hand
  mockmixer load [flags]     drive load with pre-encoded requests and report throughput and latency

Without Mixer (an adapter started with --config-dir), mockmixer plays Envoy:
  mockmixer accesslog [flags]        stream access-log entries written by hand, as Envoy's gRPC access logger
  mockmixer accesslog-load [flags]   drive load with streams of access-log entries

Run 'mockmixer <command> -h' for a command's flags. docs/mockmixer.md has examples.
`

// exit codes: 0 all went well; 1 something failed (a call, an instance); 2 bad usage or
// config, nothing sent.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	var code int
	switch args[0] {
	case "report":
		code = runReport(ctx, args[1:], e)
	case "send":
		code = runSend(ctx, args[1:], e)
	case "load":
		code = runLoad(ctx, args[1:], e)
	case "accesslog":
		code = runAccesslog(ctx, args[1:], e)
	case "accesslog-load":
		code = runAccesslogLoad(ctx, args[1:], e)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(e.stderr, "mockmixer: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return code
}

// newFlagSet makes a command's flag set; errors and usage go to stderr.
func newFlagSet(name, synopsis string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet("mockmixer "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: mockmixer %s [flags]\n\n%s\n\nFlags (-x and --x are the same):\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and refuses stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (flags only; see -h)", fs.Args())
	}
	return nil
}

// usageCode maps a parse error to an exit code: -h is not a failure.
func usageCode(err error, e env, cmd string) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if !strings.Contains(err.Error(), "flag provided but not defined") {
		fmt.Fprintf(e.stderr, "mockmixer %s: %v\n", cmd, err)
	}
	return exitUsage
}

// listFlag collects a repeatable flag's values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
