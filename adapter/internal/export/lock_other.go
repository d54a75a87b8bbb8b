//go:build !unix

package export

import "os"

// lockDir only creates the lock file where flock is unavailable: the
// adapter ships for Linux, where lock_unix.go applies.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
