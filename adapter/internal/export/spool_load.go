package export

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Loading what an earlier run left in the spool directory.

// load indexes the destinations an earlier run left.
func (sp *Spool) load() error {
	des, err := os.ReadDir(sp.dir)
	if err != nil {
		return err
	}
	var lost []lostEntry
	for _, de := range des {
		if !de.IsDir() || !isDigest(de.Name()) {
			continue
		}
		sd, l, err := sp.loadDir(de.Name())
		if err != nil {
			return err
		}
		lost = append(lost, l...)
		for _, x := range l {
			sp.corrupt[x.sink]++
		}
		if sd != nil {
			sp.dirs[sd.name] = sd
		}
	}
	sp.mu.Lock()
	victims := sp.evictLocked(nil)
	sp.mu.Unlock()
	sp.removeFiles(victims)
	for _, l := range lost {
		sp.opts.OnDrop(l.sink, l.reason, l.units, l.instances, l.err)
	}
	sp.reportVictims(victims)
	return nil
}

func isDigest(name string) bool {
	if len(name) != digestLen {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil
}

func (sp *Spool) loadDir(name string) (*spoolDir, []lostEntry, error) {
	path := filepath.Join(sp.dir, name)
	sd := &spoolDir{sp: sp, name: name, path: path, nextSeq: 1, inflight: map[*entry]struct{}{}}
	if b, err := os.ReadFile(filepath.Join(path, sinkFileName)); err == nil {
		sd.sink = strings.TrimSpace(string(b))
	}
	if sd.sink == "" {
		sd.sink = "spool:" + name // a directory whose SINK file was lost
	}
	des, err := os.ReadDir(path)
	if err != nil {
		return nil, nil, err
	}
	var lost []lostEntry
	for _, de := range des {
		n := de.Name()
		if !strings.HasSuffix(n, requestSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(n, requestSuffix), 16, 64)
		if err != nil {
			continue
		}
		sd.nextSeq = max(sd.nextSeq, seq+1)
		e, err := readEntryHeader(filepath.Join(path, n))
		if err != nil {
			_ = os.Remove(filepath.Join(path, n))
			lost = append(lost, lostEntry{sink: sd.sink, reason: telemetry.DropSpoolCorrupt, units: e.units, instances: e.instances,
				err: fmt.Errorf("%s: %w", filepath.Join(name, n), err)})
			continue
		}
		e.seq, e.file, e.replayed = seq, n, true
		sd.pending = append(sd.pending, e)
		sd.add(e)
		sp.total += e.size
	}
	sort.Slice(sd.pending, func(i, j int) bool { return sd.pending[i].seq < sd.pending[j].seq })
	if len(sd.pending) == 0 {
		// Nothing left to send: forget the destination (it is created
		// again if its sink comes back).
		_ = os.RemoveAll(path)
		return nil, lost, nil
	}
	return sd, lost, nil
}
