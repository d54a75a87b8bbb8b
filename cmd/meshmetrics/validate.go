package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/configcheck"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

const validateUsage = `Usage: meshmetrics validate [-f FILE_OR_DIR]... [--config-dir DIR] [flags]

Checks a config offline, as this meshmetrics would take it, and exits 1 when
it finds an error (0 when it finds none, 2 for bad flags):

  -f        Mixer CRDs, as mockmixer reads them (adapter, template,
            attributemanifest, handler, instance, rule; files or directories)
  --config-dir  a Mixer-less config directory (default $MESHMETRICS_CONFIG_DIR,
            so that in a pod "meshmetrics validate" checks the mounted one)

Every handler of the meshmetrics adapter goes through the adapter's own
params validation (defaults, field rules, the Prometheus and Librato name
rules, readable credential files); instances, rules and handlers are
cross-checked: a label no dimension of the instance fills, a value no metric
can count, an instance sent to a handler without a metric for it, a rule
whose handler or instance does not exist, an attribute typo (with "did you
mean"), a handler or instance no rule uses. Each finding names the object,
its file and line, and the field. Credential files and variables are checked
on this machine: a finding about them is a warning.

Flags:
`

// validateCode runs `meshmetrics validate` and returns its exit status.
func validateCode(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshmetrics validate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var files []string
	addFile := func(v string) error { files = append(files, v); return nil }
	fs.Func("f", "file or directory of Mixer CRDs; repeatable", addFile)
	fs.Func("config", "same as -f", addFile)
	var o configcheck.Options
	fs.StringVar(&o.ConfigDir, "config-dir", "", "Mixer-less config directory (also "+envName("config-dir")+")")
	fs.StringVar(&o.DefaultNamespace, "default-namespace", crd.DefaultConfigNamespace, "Mixer's default config namespace")
	fs.BoolVar(&o.MixerExact, "als-mixer-exact", false, "as the server flag: the Mixer-less attribute mapping of Istio 1.7.8 only")
	fs.Func("als-header-attributes", "as the server flag: header=attribute pairs of the Mixer-less mapping", func(v string) error {
		m, err := headerAttributes(v)
		o.HeaderAttributes = m
		return err
	})
	strict := fs.Bool("strict", false, "exit 1 on warnings too")
	digests := fs.Bool("digests", false, "list each valid meshmetrics handler with the digest a running adapter logs for it (handler=...)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, validateUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "meshmetrics validate: %s (see --help)\n", userSpelling(err.Error(), args))
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshmetrics validate: unexpected arguments %q (files go after -f)\n", fs.Args())
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"config-dir", "als-mixer-exact", "als-header-attributes"} {
		if v, ok := lookup(getenv, envName(name)); ok && !set[name] {
			if err := fs.Set(name, v); err != nil {
				fmt.Fprintf(stderr, "meshmetrics validate: %s=%q: %v\n", envName(name), v, err)
				return 2
			}
		}
	}
	o.Files = files
	if len(o.Files) == 0 && o.ConfigDir == "" {
		fmt.Fprintf(stderr, "meshmetrics validate: nothing to check: give Mixer CRDs with -f or a config directory with --config-dir (see --help)\n")
		return 2
	}
	r := configcheck.Check(o)
	warnings := 0
	for _, f := range r.Findings {
		if f.Severity == configcheck.Warning {
			warnings++
		}
		fmt.Fprintln(stdout, f.String())
	}
	if *digests {
		keys := make([]string, 0, len(r.Digests))
		for k := range r.Digests {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(stdout, "handler %s: handler=%s in the adapter's logs\n", k, r.Digests[k])
		}
	}
	errs := r.Errors()
	fmt.Fprintf(stdout, "%s, %s: %d handlers (%d of meshmetrics), %d instances, %d rules\n",
		count(errs, "error"), count(warnings, "warning"), r.Handlers, r.LocalHandlers, r.Instances, r.Rules)
	if errs > 0 || (*strict && warnings > 0) {
		return 1
	}
	return 0
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// headerAttributes reads --als-header-attributes: header=attribute pairs.
func headerAttributes(v string) (map[string]string, error) {
	out := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		h, attr, ok := strings.Cut(pair, "=")
		if !ok || strings.TrimSpace(h) == "" || strings.TrimSpace(attr) == "" {
			return nil, fmt.Errorf("%q is not header=attribute", pair)
		}
		out[strings.TrimSpace(h)] = strings.TrimSpace(attr)
	}
	return out, nil
}
