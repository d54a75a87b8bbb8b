// Package toolcache builds the Go tools the deploy tests run (actionlint,
// kube-apiserver) once per version into a cache outside the repository,
// ~/.cache/meshmetrics-tools/<name>-<version>, so that later runs reuse
// them. Builds go to a temporary file renamed into place, so concurrent
// test runs never see half a binary.
package toolcache

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Dir is the cache directory: $MESHMETRICS_TOOLS_DIR, else
// <user cache dir>/meshmetrics-tools.
func Dir() (string, error) {
	if d := os.Getenv("MESHMETRICS_TOOLS_DIR"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "meshmetrics-tools"), nil
}

// Result is a cached tool.
type Result struct {
	Path string
	// Built is how long building took, zero when the cache had it.
	Built time.Duration
}

// Build returns the binary name-version from the cache, building it first
// when absent with `go build <flags> -o <tmp> <pkg>` run in dir (a module
// that pins pkg). The version must pin everything the build depends on: it
// is the cache key.
func Build(name, version, dir, pkg string, flags ...string) (Result, error) {
	cache, path, ok, err := cached(name, version)
	if err != nil {
		return Result{}, err
	}
	if ok {
		return Result{Path: path}, nil
	}
	tmp, err := os.CreateTemp(cache, "."+name+"-*")
	if err != nil {
		return Result{}, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	start := time.Now()
	args := append(append([]string{"build"}, flags...), "-o", tmp.Name(), pkg)
	cmd := exec.CommandContext(context.Background(), "go", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("building %s %s (go %s in %s): %w\n%s", name, version, strings.Join(args, " "), dir, err, out)
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return Result{}, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Result{}, err
	}
	return Result{Path: path, Built: time.Since(start)}, nil
}

// cached is where name-version lives in the cache, whether it is there
// (an executable file), and the cache directory, created when absent.
func cached(name, version string) (cache, path string, ok bool, err error) {
	if cache, err = Dir(); err != nil {
		return "", "", false, err
	}
	path = filepath.Join(cache, name+"-"+version)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return cache, path, true, nil
	}
	return cache, path, false, os.MkdirAll(cache, 0o755)
}

// Install returns the binary name-version from the cache, installing it
// first when absent with `go install pkg@version` (outside any module, so
// the version is exactly the one asked for).
func Install(name, version, pkg string) (Result, error) {
	cache, path, ok, err := cached(name, version)
	if err != nil {
		return Result{}, err
	}
	if ok {
		return Result{Path: path}, nil
	}
	gobin, err := os.MkdirTemp(cache, "."+name+"-*")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(gobin)
	start := time.Now()
	cmd := exec.CommandContext(context.Background(), "go", "install", pkg+"@"+version)
	cmd.Dir = gobin
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Result{}, fmt.Errorf("go install %s@%s: %w\n%s", pkg, version, err, out)
	}
	if err := os.Rename(filepath.Join(gobin, filepath.Base(pkg)), path); err != nil {
		return Result{}, err
	}
	return Result{Path: path, Built: time.Since(start)}, nil
}

// The tools the deploy tests run, and their versions (the cache keys).
const (
	// KubernetesVersion is the k8s.io/kubernetes that deploy/apiserver/go.mod
	// pins.
	KubernetesVersion = "v1.37.2"
	// ActionlintVersion is github.com/rhysd/actionlint, as served by the Go
	// module proxy.
	ActionlintVersion = "v1.7.12"
)

// KubeAPIServer builds kube-apiserver from the module in apiserverDir
// (deploy/apiserver) once per KubernetesVersion: about 15-30 minutes cold
// on two cores, seconds when Go's build cache has the packages. The
// version is stamped as Kubernetes' own build does, so /version reports it
// (Helm's capabilities and the chart's version guards read it).
func KubeAPIServer(apiserverDir string) (Result, error) {
	mod, err := os.ReadFile(filepath.Join(apiserverDir, "go.mod"))
	if err != nil {
		return Result{}, err
	}
	if !regexp.MustCompile(`(?m)^\s*(require )?k8s\.io/kubernetes ` + regexp.QuoteMeta(KubernetesVersion) + `\b`).Match(mod) {
		return Result{}, fmt.Errorf("%s/go.mod does not pin k8s.io/kubernetes %s (toolcache.KubernetesVersion)", apiserverDir, KubernetesVersion)
	}
	minor := strings.Split(strings.TrimPrefix(KubernetesVersion, "v"), ".")[1]
	ldflags := strings.Join([]string{
		"-X k8s.io/component-base/version.gitVersion=" + KubernetesVersion,
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=" + minor,
		"-X k8s.io/component-base/version.gitTreeState=clean",
		"-X k8s.io/client-go/pkg/version.gitVersion=" + KubernetesVersion,
	}, " ")
	return Build("kube-apiserver", KubernetesVersion, apiserverDir, "k8s.io/kubernetes/cmd/kube-apiserver", "-trimpath", "-ldflags", ldflags)
}

// Actionlint installs actionlint once per ActionlintVersion.
func Actionlint() (Result, error) {
	return Install("actionlint", ActionlintVersion, "github.com/rhysd/actionlint/cmd/actionlint")
}
