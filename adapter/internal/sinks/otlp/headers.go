package otlp

import (
	"fmt"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/secretfile"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// headers are the request headers (gRPC metadata) of a sink: the static
// ones and those read from files, kept by secretfile (re-read when the file
// changes, a rotated Kubernetes Secret; the last good value kept). Every
// credential is registered as a secret, so that logs never show it.
type headers struct {
	static []header
	files  []fileHeader
}

type header struct{ name, value string }

type fileHeader struct {
	name, prefix string
	file         *secretfile.File
}

func headerFileField(i int) string { return fmt.Sprintf("otlp.header_files[%d].path", i) }

// checkHeaderFiles reads every header file once, registering nothing: for
// Check, so that New never fails where Check passed.
func checkHeaderFiles(o *config.OtlpParams) error {
	for i, h := range o.HeaderFiles {
		if _, err := secretfile.Read(h.Path); err != nil {
			return fmt.Errorf("%s: %w", headerFileField(i), err)
		}
	}
	return nil
}

func newHeaders(o *config.OtlpParams, env sinks.Env) (*headers, error) {
	h := &headers{}
	for k, v := range o.Headers {
		if sensitiveHeader(k) && env.Secrets != nil && v != "" {
			env.Secrets.Add(v)
		}
		h.static = append(h.static, header{name: strings.ToLower(k), value: v})
	}
	for i, hf := range o.HeaderFiles {
		f, err := secretfile.Open(hf.Path, secretfile.Options{What: headerFileField(i), Secrets: env.Secrets, Limiter: env.Limiter})
		if err != nil {
			return nil, err
		}
		h.files = append(h.files, fileHeader{name: strings.ToLower(hf.Name), prefix: hf.Prefix, file: f})
	}
	return h, nil
}

// each calls set for every header, with file values as of now.
func (h *headers) each(set func(name, value string)) {
	for _, s := range h.static {
		set(s.name, s.value)
	}
	for _, f := range h.files {
		set(f.name, f.prefix+f.file.Value())
	}
}
