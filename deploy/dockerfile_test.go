package deploy

import (
	"bytes"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/config"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// parseDockerfile reads the instructions of a Dockerfile: comments dropped
// (also between continuation lines, as Docker does), lines ending in a
// backslash joined.
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(trimmed)
		full := strings.TrimSpace(cur.String())
		cur.Reset()
		if full == "" {
			continue
		}
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
	}
	return out
}

// shellWords splits a command line like sh would for the simple forms the
// Dockerfile uses: quotes group and are removed, ${NAME} and $NAME expand
// from vars (outside single quotes).
func shellWords(line string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == 0 && (r == ' ' || r == '\t'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case quote == 0 && (r == '"' || r == '\''):
			quote, inWord = r, true
		case quote != 0 && r == quote:
			quote = 0
		case r == '$' && quote != '\'':
			var name string
			if i+1 < len(rs) && rs[i+1] == '{' {
				end := strings.IndexRune(string(rs[i+2:]), '}')
				if end < 0 {
					return nil, fmt.Errorf("unterminated ${ in %q", line)
				}
				name = string(rs[i+2 : i+2+end])
				i += 2 + end
			} else {
				j := i + 1
				for j < len(rs) && (rs[j] == '_' || 'A' <= rs[j] && rs[j] <= 'Z' || 'a' <= rs[j] && rs[j] <= 'z' || '0' <= rs[j] && rs[j] <= '9') {
					j++
				}
				name = string(rs[i+1 : j])
				i = j - 1
			}
			v, ok := vars[name]
			if !ok {
				return nil, fmt.Errorf("variable %s is not defined", name)
			}
			cur.WriteString(v)
			inWord = true
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// dockerfile is what the tests need to know of deploy/Dockerfile.
type dockerfile struct {
	instructions []instruction
	// args are the ARG defaults, in order.
	args map[string]string
	// stages are the FROM instructions, ARGs expanded.
	stages []string
}

func readDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	d := &dockerfile{instructions: parseDockerfile(string(data)), args: map[string]string{}}
	for _, in := range d.instructions {
		switch in.cmd {
		case "ARG":
			name, def, _ := strings.Cut(in.args, "=")
			d.args[name] = def
		case "FROM":
			vars := map[string]string{}
			for k, v := range d.args {
				vars[k] = v
			}
			// Set by BuildKit (make image passes it to the classic builder).
			vars["BUILDPLATFORM"] = "linux/" + runtime.GOARCH
			words, err := shellWords(in.args, vars)
			require.NoError(t, err, "FROM %s", in.args)
			d.stages = append(d.stages, strings.Join(words, " "))
		}
	}
	return d
}

// finalStage returns the instructions after the last FROM.
func (d *dockerfile) finalStage() []instruction {
	for i := len(d.instructions) - 1; i >= 0; i-- {
		if d.instructions[i].cmd == "FROM" {
			return d.instructions[i:]
		}
	}
	return nil
}

// buildCommand is the Dockerfile's `go build` RUN: its environment and
// arguments, ARGs expanded with vars.
func (d *dockerfile) buildCommand(t *testing.T, vars map[string]string) (env, args []string) {
	t.Helper()
	for _, in := range d.instructions {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		words, err := shellWords(in.args, vars)
		require.NoError(t, err)
		for len(words) > 0 && strings.HasPrefix(words[0], "--") { // RUN --mount=...
			words = words[1:]
		}
		for len(words) > 0 && regexp.MustCompile(`^[A-Z_]+=`).MatchString(words[0]) {
			env = append(env, words[0])
			words = words[1:]
		}
		require.GreaterOrEqual(t, len(words), 2)
		require.Equal(t, []string{"go", "build"}, words[:2], "the RUN must be a plain go build")
		return env, words[2:]
	}
	t.Fatal("the Dockerfile has no RUN with go build")
	return nil, nil
}

// testVersion is what the tests pass as the VERSION build argument.
const testVersion = "v0.0.0-deploytest"

// buildLikeDockerfile runs the Dockerfile's `go build` with its environment
// and flags from the repository root (the build context, copied to the
// WORKDIR), for this machine's architecture so the binary can run here,
// and returns the binary's path.
func buildLikeDockerfile(t *testing.T) string {
	t.Helper()
	d := readDockerfile(t)
	vars := map[string]string{"VERSION": testVersion, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	env, args := d.buildCommand(t, vars)
	out := filepath.Join(t.TempDir(), "meshmetrics")
	for i, a := range args {
		if a == "-o" {
			require.Less(t, i+1, len(args))
			args[i+1] = out
		}
	}
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build %s: %s", strings.Join(args, " "), msg)
	return out
}

func TestDockerfileBuildsAStaticVersionedBinary(t *testing.T) {
	d := readDockerfile(t)
	env, args := d.buildCommand(t, map[string]string{"VERSION": testVersion, "TARGETOS": "linux", "TARGETARCH": "amd64"})
	require.Contains(t, env, "CGO_ENABLED=0", "a cgo binary needs a libc the final image lacks")
	require.Contains(t, args, "-trimpath")
	require.Contains(t, strings.Join(args, " "), "-X main.version="+testVersion)

	bin := buildLikeDockerfile(t)
	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "the binary asks for a dynamic loader")
		require.NotEqual(t, elf.PT_DYNAMIC, p.Type, "the binary has a dynamic section")
	}
	require.Nil(t, f.Section(".interp"))
	require.Nil(t, f.Section(".dynamic"))
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	require.Empty(t, libs)

	// -trimpath: the build machine's paths stay out of the image.
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	require.False(t, bytes.Contains(data, []byte(root+"/adapter")), "the binary holds build paths under %s", root)

	out, err := exec.Command(bin, "--version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.True(t, strings.HasPrefix(string(out), "meshmetrics "+testVersion+" (commit "), "the -ldflags version comes first: %s", out)
}

func TestDockerfileStages(t *testing.T) {
	d := readDockerfile(t)
	require.GreaterOrEqual(t, len(d.stages), 2, "multi-stage: the toolchain stays out of the image")
	for _, s := range d.stages {
		image := stageImage(s)
		require.NotContains(t, image, ":latest", "pin base images")
		require.True(t, image == "scratch" || strings.Contains(image, ":") || strings.Contains(image, "@sha256:"), "base image %s has no tag", image)
	}
	final := stageImage(d.stages[len(d.stages)-1])
	require.Regexp(t, `^(scratch|gcr\.io/distroless/static[-a-z0-9]*(:[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?)$`, final,
		"the final image is distroless static or scratch")

	// The toolchain is the one go.mod asks for.
	mod, err := os.ReadFile("../go.mod")
	require.NoError(t, err)
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	require.NotNil(t, goVersion)
	require.Equal(t, string(goVersion[1]), d.args["GO_VERSION"])
	require.Contains(t, d.stages[0], "golang:"+d.args["GO_VERSION"])

	var user, entrypoint string
	var copied bool
	var exposed []string
	for _, in := range d.finalStage() {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "COPY":
			copied = copied || strings.HasPrefix(in.args, "--from=build ")
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "RUN":
			t.Fatalf("the final stage runs %q: a distroless image has no shell", in.args)
		}
	}
	require.True(t, copied, "the final stage copies the binary from the build stage")
	require.Equal(t, `["/meshmetrics"]`, entrypoint, "exec form: the binary is PID 1 and gets SIGTERM")
	uid, gid, ok := strings.Cut(user, ":")
	require.True(t, ok, "USER uid:gid, numeric, so runAsNonRoot can check it")
	for _, id := range []string{uid, gid} {
		n, err := strconv.Atoi(id)
		require.NoError(t, err, "USER %s is not numeric", user)
		require.NotZero(t, n, "USER %s is root", user)
	}
	// The ports the adapter listens on by default.
	require.Equal(t, []string{port(t, config.DefaultGRPCAddress), port(t, config.DefaultHTTPAddress)}, exposed)
}

// stageImage is the image of a FROM, its options dropped.
func stageImage(from string) string {
	for _, w := range strings.Fields(from) {
		if !strings.HasPrefix(w, "--") {
			return w
		}
	}
	return ""
}

func port(t *testing.T, address string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(address)
	require.NoError(t, err)
	return p
}

func TestShellWords(t *testing.T) {
	vars := map[string]string{"V": "1.2", "EMPTY": ""}
	cases := []struct {
		name, line string
		want       []string
		wantErr    string
	}{
		{"plain", "go build ./x", []string{"go", "build", "./x"}, ""},
		{"double quotes keep spaces and expand", `-ldflags="-s -X main.version=${V}"`, []string{"-ldflags=-s -X main.version=1.2"}, ""},
		{"single quotes do not expand", `'$V'`, []string{"$V"}, ""},
		{"bare variable", "A=$V B", []string{"A=1.2", "B"}, ""},
		{"empty variable", `x="${EMPTY}"`, []string{"x="}, ""},
		{"undefined", "${NOPE}", nil, "NOPE is not defined"},
		{"unterminated", `"abc`, nil, "unterminated quote"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := shellWords(c.line, vars)
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestParseDockerfile(t *testing.T) {
	got := parseDockerfile("# c\nFROM a AS b\n\nRUN x \\\n  # inner comment\n  y\nuser 1:1\n")
	require.Equal(t, []instruction{{"FROM", "a AS b"}, {"RUN", "x  y"}, {"USER", "1:1"}}, got)
}
