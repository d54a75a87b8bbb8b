package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/meshmetrics/meshmetrics/adapter"
)

// version is set at build time with -ldflags "-X main.version=..." (the
// Dockerfile and the release workflow do); otherwise it comes from the
// module's build information (a `go install ...@v1.2.3` knows its version).
var version = ""

// buildInfo describes this binary: the version, the VCS revision and time
// the Go toolchain stamped in, and the Go version.
func buildInfo() adapter.BuildInfo {
	b := adapter.BuildInfo{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if b.Version == "" {
			b.Version = "unknown"
		}
		return b
	}
	if b.Version == "" {
		b.Version = bi.Main.Version // "(devel)" for a build from a work tree
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		b.Revision += "-dirty"
	}
	return b
}

func versionLine(b adapter.BuildInfo) string {
	s := fmt.Sprintf("meshmetrics %s (commit %s", b.Version, b.Revision)
	if b.Time != "" {
		s += ", " + b.Time
	}
	return s + ", " + b.GoVersion + ")"
}
