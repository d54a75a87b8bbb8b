// Command buildtools builds the tools the deploy tests run (kube-apiserver,
// actionlint) into the tool cache, so that `go test` finds them there
// instead of building them within its timeout. Run from the repository
// root; make test does (make test-tools):
//
//	go run ./deploy/internal/toolcache/buildtools
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/meshmetrics/meshmetrics/deploy/internal/toolcache"
)

func main() {
	for _, tool := range []struct {
		name  string
		build func() (toolcache.Result, error)
	}{
		{"kube-apiserver " + toolcache.KubernetesVersion, func() (toolcache.Result, error) { return toolcache.KubeAPIServer("deploy/apiserver") }},
		{"actionlint " + toolcache.ActionlintVersion, toolcache.Actionlint},
	} {
		r, err := tool.build()
		if err != nil {
			fmt.Fprintln(os.Stderr, "buildtools:", err)
			os.Exit(1)
		}
		if r.Built > 0 {
			fmt.Printf("buildtools: built %s in %s: %s\n", tool.name, r.Built.Round(time.Second), r.Path)
		} else {
			fmt.Printf("buildtools: %s cached: %s\n", tool.name, r.Path)
		}
	}
}
