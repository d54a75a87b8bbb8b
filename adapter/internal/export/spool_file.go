package export

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// Spool files: the layout of one request on disk, its checks, and writes
// that survive a crash.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a spool file that cannot be trusted.
var errCorrupt = errors.New("corrupt spool file")

type header struct {
	units, instances int
	written          int64
	length           uint32
	crc              uint32
}

// encodeEntry lays out a spool file: magic, version, units, instances,
// write time, payload length and CRC-32C, the header's own CRC-32C, then
// the payload. Length and checksums let a torn write be told from a
// complete one.
func encodeEntry(units, instances int, written int64, payload []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(payload))
	copy(b, spoolMagic)
	b[4] = spoolVersion
	binary.LittleEndian.PutUint32(b[8:], uint32(units))
	binary.LittleEndian.PutUint32(b[12:], uint32(instances))
	binary.LittleEndian.PutUint64(b[16:], uint64(written))
	binary.LittleEndian.PutUint32(b[24:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(b[32:], crc32.Checksum(b[:32], castagnoli))
	return append(b, payload...)
}

func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("%w: %d bytes, shorter than a header", errCorrupt, len(b))
	}
	if string(b[:4]) != spoolMagic || b[4] != spoolVersion {
		return header{}, fmt.Errorf("%w: not a version %d spool file", errCorrupt, spoolVersion)
	}
	if crc32.Checksum(b[:32], castagnoli) != binary.LittleEndian.Uint32(b[32:]) {
		return header{}, fmt.Errorf("%w: header checksum mismatch", errCorrupt)
	}
	return header{
		units:     int(binary.LittleEndian.Uint32(b[8:])),
		instances: int(binary.LittleEndian.Uint32(b[12:])),
		written:   int64(binary.LittleEndian.Uint64(b[16:])),
		length:    binary.LittleEndian.Uint32(b[24:]),
		crc:       binary.LittleEndian.Uint32(b[28:]),
	}, nil
}

// readEntryHeader checks a file's header and length. The payload checksum
// is checked when the request is read for sending. On error the returned
// entry still carries the counts when the header itself was sound.
func readEntryHeader(path string) (*entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return &entry{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return &entry{}, err
	}
	b := make([]byte, headerSize)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return &entry{}, err
	}
	h, err := parseHeader(b[:n])
	if err != nil {
		return &entry{}, err
	}
	e := &entry{units: h.units, instances: h.instances, written: h.written, size: st.Size()}
	if want := int64(headerSize) + int64(h.length); st.Size() != want {
		return e, fmt.Errorf("%w: %d bytes, the header says %d (torn write)", errCorrupt, st.Size(), want)
	}
	return e, nil
}

func loadSalt(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == saltLen {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, saltLen)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	if err := writeSynced(path, b, nil, true); err != nil {
		return nil, err
	}
	return b, nil
}

// writeSynced writes a whole file and fsyncs it, then its directory (dir,
// open, or else opened from path), so that the file survives a crash. A
// request file is new (O_EXCL: a name is never reused); other files may be
// replaced. A failed write leaves no file.
func writeSynced(path string, data []byte, dir *os.File, replace bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if replace {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if dir != nil {
			err = dir.Sync()
		} else {
			err = syncDir(filepath.Dir(path))
		}
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
