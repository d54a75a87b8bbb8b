// Command render rewrites the plain manifests in deploy/kubernetes from the
// Helm chart in deploy/helm/meshmetrics. Run it from the repository root
// after changing the chart:
//
//	go run ./deploy/render
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/meshmetrics/meshmetrics/deploy"
)

func main() {
	dir := flag.String("dir", "deploy", "the deploy directory")
	flag.Parse()
	if err := deploy.Write(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
