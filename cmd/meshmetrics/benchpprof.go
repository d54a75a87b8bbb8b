//go:build benchpprof

package main

// The CPU profile of the adapter process for the Mixer-less end-to-end
// benchmark (go run ./adapter/internal/bench/alsharness -cpuprofile): only
// a binary built with -tags benchpprof serves net/http/pprof, on the
// loopback address in ALSHARNESS_PPROF_ADDRESS. Release builds have no
// such listener.

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" //nolint:gosec // benchmark builds only, on an address the harness picks
	"os"
	"time"
)

func init() {
	addr := os.Getenv("ALSHARNESS_PPROF_ADDRESS")
	if addr == "" {
		return
	}
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			fmt.Fprintln(os.Stderr, "benchpprof:", err)
		}
	}()
}
