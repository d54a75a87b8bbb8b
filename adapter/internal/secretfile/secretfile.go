// Package secretfile keeps the value of a secret held in a file (a token,
// a password): a mounted Kubernetes Secret, which the kubelet replaces in
// place when the Secret changes. A File reads it at start, looks again
// (a stat) before handing the value out and re-reads it when it changed,
// keeps the last good value when a reload fails, registers every value
// with the logger's secrets, and reports reload errors rate-limited.
// Errors name the file, never its content.
package secretfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
)

// ErrEmpty is returned for a file that holds only white space.
var ErrEmpty = errors.New("is empty")

// Options configure Open.
type Options struct {
	// What names the file in errors and logs ("librato.token_path").
	What string
	// Secrets registers every value read, so that logs never show it.
	Secrets *logging.Secrets
	// Limiter reports a failed reload at most once per interval; nil
	// reports nothing (the error is still returned by Load).
	Limiter *logging.Limiter
	// CheckEvery bounds how often the file is looked at; 0 looks at every
	// Value call (a stat).
	CheckEvery time.Duration
	// OnChange is told each value loaded after the first (a rotation).
	OnChange func(value string)
}

// File is a secret file's current value.
type File struct {
	path string
	opts Options

	mu      sync.Mutex
	value   string
	stamp   stamp
	checked time.Time
}

// stamp tells whether a file changed since it was read.
type stamp struct {
	modTime time.Time
	size    int64
}

// Read reads and trims a secret file once, registering nothing: for checks
// without side effects.
func Read(path string) (string, error) {
	v, _, err := read(path)
	return v, err
}

// Open reads the file, failing when it cannot be read or is empty.
func Open(path string, o Options) (*File, error) {
	v, st, err := read(path)
	if err != nil {
		return nil, o.named(err)
	}
	f := &File{path: path, opts: o, checked: time.Now()}
	f.set(v, st)
	return f, nil
}

func (o Options) named(err error) error {
	if o.What == "" {
		return err
	}
	return fmt.Errorf("%s: %w", o.What, err)
}

func (f *File) set(v string, st stamp) {
	if f.opts.Secrets != nil {
		f.opts.Secrets.Add(v)
	}
	f.value, f.stamp = v, st
}

// update sets a value read again, telling OnChange when it changed.
func (f *File) update(v string, st stamp) {
	changed := v != f.value
	f.set(v, st)
	if changed && f.opts.OnChange != nil {
		f.opts.OnChange(v)
	}
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Value is the current value: re-read when the file changed, the last good
// one when the reload fails (the failure is logged, rate-limited).
func (f *File) Value() string {
	v, err := f.Load()
	if err != nil && f.opts.Limiter != nil {
		f.opts.Limiter.Log(logrus.WarnLevel, "secretfile|"+f.path, logrus.Fields{"file": f.path},
			"cannot re-read a secret file, still using the previous one: "+err.Error())
	}
	return v
}

// Load is Value with the reload error returned alongside the last good
// value, for callers that report it themselves.
func (f *File) Load() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.opts.CheckEvery > 0 && now.Sub(f.checked) < f.opts.CheckEvery {
		return f.value, nil
	}
	f.checked = now
	fi, err := os.Stat(f.path)
	if err != nil {
		return f.value, f.opts.named(fmt.Errorf("file %s: %w", f.path, cause(err)))
	}
	if (stamp{modTime: fi.ModTime(), size: fi.Size()}) == f.stamp {
		return f.value, nil
	}
	v, st, err := read(f.path)
	if err != nil {
		return f.value, f.opts.named(err)
	}
	f.update(v, st)
	return f.value, nil
}

// Reload re-reads the file now, whatever its stamp says and however
// recently it was looked at (SIGHUP: a file replaced with the same size and
// modification time, or a check interval not yet over). A failure keeps the
// last good value, which is returned with the error.
func (f *File) Reload() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checked = time.Now()
	v, st, err := read(f.path)
	if err != nil {
		return f.value, f.opts.named(err)
	}
	f.update(v, st)
	return f.value, nil
}

// read reads and trims a file. The stamp is taken before the read, so a
// change racing with it is seen again next time, not missed.
func read(path string) (string, stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", stamp{}, fmt.Errorf("file %s: %w", path, cause(err))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", stamp{}, fmt.Errorf("file %s: %w", path, cause(err))
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", stamp{}, fmt.Errorf("file %s %w", path, ErrEmpty)
	}
	return v, stamp{modTime: fi.ModTime(), size: fi.Size()}, nil
}

// cause drops the path from a file error: the message names it already.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
