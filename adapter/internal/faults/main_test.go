package faults_test

import (
	"os"
	"sync"
	"testing"
)

// built is cmd/meshmetrics built once for the tests that run the binary.
var built struct {
	once     sync.Once
	dir, bin string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}
