package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeDocker is a docker CLI that records each call (arguments and
// DOCKER_BUILDKIT) and answers `docker buildx version` as a machine with
// or without the buildx plugin would.
const fakeDocker = `#!/bin/sh
echo "DOCKER_BUILDKIT=${DOCKER_BUILDKIT-unset} $*" >> "$FAKE_DOCKER_LOG"
if [ "$1" = buildx ]; then
  [ "$FAKE_BUILDX" = 1 ] || { echo "docker: 'buildx' is not a docker command." >&2; exit 1; }
fi
exit 0
`

func runMakeImage(t *testing.T, buildx bool, target string) []string {
	t.Helper()
	dir := t.TempDir()
	docker := filepath.Join(dir, "docker")
	require.NoError(t, os.WriteFile(docker, []byte(fakeDocker), 0o755))
	logFile := filepath.Join(dir, "calls")
	cmd := exec.Command("make", "--no-print-directory", target, "DOCKER="+docker, "IMAGE_VERSION=1.2.3", "IMAGE_ARCH=arm64")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "FAKE_DOCKER_LOG="+logFile, "FAKE_BUILDX="+map[bool]string{true: "1", false: "0"}[buildx])
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	data, err := os.ReadFile(logFile)
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func TestMakeImage(t *testing.T) {
	t.Run("with buildx", func(t *testing.T) {
		calls := runMakeImage(t, true, "image")
		require.Len(t, calls, 2)
		require.Contains(t, calls[0], "buildx version")
		require.Equal(t, "DOCKER_BUILDKIT=unset buildx build --load --platform linux/arm64 -f deploy/Dockerfile --build-arg VERSION=1.2.3 -t ghcr.io/meshmetrics/meshmetrics:1.2.3 .", calls[1])
	})
	t.Run("without buildx: the classic builder, given the platform arguments", func(t *testing.T) {
		calls := runMakeImage(t, false, "image")
		require.Len(t, calls, 2)
		require.Equal(t, "DOCKER_BUILDKIT=0 build -f deploy/Dockerfile --build-arg VERSION=1.2.3 --build-arg BUILDPLATFORM=linux/arm64 --build-arg TARGETOS=linux --build-arg TARGETARCH=arm64 -t ghcr.io/meshmetrics/meshmetrics:1.2.3 .", calls[1])
		// Every --build-arg is an ARG of the Dockerfile.
		d := readDockerfile(t)
		for _, w := range strings.Fields(calls[1]) {
			if name, _, ok := strings.Cut(w, "="); ok && strings.ToUpper(name) == name && name != "DOCKER_BUILDKIT" {
				_, declared := d.args[name]
				require.True(t, declared, "--build-arg %s is not an ARG of the Dockerfile", name)
			}
		}
	})
	t.Run("multi-arch push needs buildx", func(t *testing.T) {
		calls := runMakeImage(t, true, "image-push")
		require.Equal(t, "DOCKER_BUILDKIT=unset buildx build --push --platform linux/amd64,linux/arm64 -f deploy/Dockerfile --build-arg VERSION=1.2.3 -t ghcr.io/meshmetrics/meshmetrics:1.2.3 .", calls[len(calls)-1])

		dir := t.TempDir()
		docker := filepath.Join(dir, "docker")
		require.NoError(t, os.WriteFile(docker, []byte(fakeDocker), 0o755))
		cmd := exec.Command("make", "--no-print-directory", "image-push", "DOCKER="+docker)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "FAKE_DOCKER_LOG="+filepath.Join(dir, "calls"), "FAKE_BUILDX=0")
		out, err := cmd.CombinedOutput()
		require.Error(t, err)
		require.Contains(t, string(out), "needs docker buildx")
	})
}

func TestDockerfileBuildsWithoutBuildKit(t *testing.T) {
	// Docker's classic builder (no buildx plugin) knows no RUN --mount, no
	// heredocs, and sets no platform ARGs: those a FROM uses must be
	// declared before it, for make image to pass them.
	d := readDockerfile(t)
	global := map[string]bool{}
	seenFrom := false
	for _, in := range d.instructions {
		switch in.cmd {
		case "ARG":
			name, _, _ := strings.Cut(in.args, "=")
			if !seenFrom {
				global[name] = true
			}
		case "FROM":
			seenFrom = true
			for _, v := range []string{"BUILDPLATFORM", "GO_VERSION"} {
				if strings.Contains(in.args, "$"+v) || strings.Contains(in.args, "${"+v+"}") {
					require.True(t, global[v], "FROM uses %s, which is not declared before the first FROM", v)
				}
			}
		case "RUN":
			require.NotContains(t, in.args, "--mount", "RUN --mount needs BuildKit")
			require.NotContains(t, in.args, "<<", "heredocs need BuildKit")
		}
	}
	// The classic builder reads only the context's .dockerignore; BuildKit
	// prefers the one next to the Dockerfile. They are the same.
	root, err := os.ReadFile("../.dockerignore")
	require.NoError(t, err)
	next, err := os.ReadFile("Dockerfile.dockerignore")
	require.NoError(t, err)
	require.Equal(t, string(next), string(root))
}
