package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshmetrics/meshmetrics/deploy/internal/toolcache"
)

// actionlint returns actionlint from the tool cache, installing it from
// the Go module proxy when absent.
func actionlint(t *testing.T) string {
	t.Helper()
	r, err := toolcache.Actionlint()
	require.NoError(t, err)
	if r.Built > 0 {
		t.Logf("built actionlint %s in %s", toolcache.ActionlintVersion, r.Built.Round(100_000_000))
	}
	return r.Path
}

func TestWorkflowsPassActionlint(t *testing.T) {
	bin := actionlint(t)
	files, err := filepath.Glob("../.github/workflows/*.yml")
	require.NoError(t, err)
	require.Contains(t, files, "../.github/workflows/release.yml")
	cmd := exec.Command(bin, append([]string{"-no-color"}, files...)...)
	cmd.Dir = "."
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "actionlint:\n%s", out)
}

func TestActionlintCatchesMistakes(t *testing.T) {
	// actionlint must fail on a broken workflow, or the test above proves
	// nothing.
	bin := actionlint(t)
	bad := filepath.Join(t.TempDir(), "bad.yml")
	require.NoError(t, os.WriteFile(bad, []byte("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n      - uses: actions/checkout@v4\n        with: {fetch-depht: 0}\n"), 0o600))
	out, err := exec.Command(bin, "-no-color", bad).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "nope")
	require.Contains(t, string(out), "fetch-depht")
}

func TestReleaseWorkflowPublishesTheChartsImage(t *testing.T) {
	// The chart's default image is what the release publishes: the same
	// repository, tagged with the chart's appVersion (= the release tag
	// without its v), built from deploy/Dockerfile for amd64 and arm64.
	data, err := os.ReadFile("../.github/workflows/release.yml")
	require.NoError(t, err)
	var wf struct {
		On struct {
			Push struct {
				Tags []string `json:"tags"`
			} `json:"push"`
		} `json:"true"` // YAML 1.1 reads the key on as true
		Env  map[string]string `json:"env"`
		Jobs map[string]struct {
			Needs any `json:"needs"`
			Steps []struct {
				Uses string         `json:"uses"`
				Run  string         `json:"run"`
				With map[string]any `json:"with"`
			} `json:"steps"`
		} `json:"jobs"`
	}
	require.NoError(t, yaml.Unmarshal(data, &wf))
	require.Equal(t, []string{"v[0-9]+.[0-9]+.[0-9]+*"}, wf.On.Push.Tags)
	require.Equal(t, "ghcr.io/${{ github.repository_owner }}/meshmetrics", wf.Env["IMAGE"])

	d := render(t, "", nil).deployment(t)
	image := container(t, d).Image
	require.True(t, strings.HasPrefix(image, "ghcr.io/meshmetrics/meshmetrics:"), "the chart's default image is the published one: %s", image)

	var build map[string]any
	var tests, packages bool
	for _, s := range wf.Jobs["image"].Steps {
		if strings.HasPrefix(s.Uses, "docker/build-push-action@") {
			build = s.With
		}
	}
	for _, s := range wf.Jobs["test"].Steps {
		tests = tests || strings.TrimSpace(s.Run) == "make test"
	}
	for _, s := range wf.Jobs["chart"].Steps {
		packages = packages || strings.Contains(s.Run, "helm package deploy/helm/meshmetrics")
	}
	require.True(t, tests, "the release runs make test first")
	require.True(t, packages, "the release packages the chart")
	require.NotNil(t, build, "the image job builds with docker/build-push-action")
	require.Equal(t, "deploy/Dockerfile", build["file"])
	require.Equal(t, "linux/amd64,linux/arm64", build["platforms"])
	require.Equal(t, true, build["push"])
	require.Equal(t, "test", wf.Jobs["image"].Needs)
	require.Equal(t, "image", wf.Jobs["chart"].Needs)
}
