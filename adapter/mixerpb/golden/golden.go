// Package golden reads the annotated hex files under testdata/golden that pin
// the bytes of the Mixer wire protocol.
package golden

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Path is the absolute path of a file under the repository's testdata/golden.
func Path(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "golden", name)
}

// ReadHex decodes an annotated hex file: '#' starts a comment, whitespace is
// ignored.
func ReadHex(name string) ([]byte, error) {
	raw, err := os.ReadFile(Path(name))
	if err != nil {
		return nil, err
	}
	var digits strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(digits.String())
}
