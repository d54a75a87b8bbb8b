package handler

import (
	"errors"

	"github.com/meshmetrics/meshmetrics/config"
)

// The handler cache is bounded by an estimate of the memory its handlers
// take, as well as by their number: three configs within the caps of one
// (10,000 metrics of 256 labels each) took 2.28 GB when only the count was
// bounded.
//
// EstimateBytes is measured, not derived: built into the exposition, a
// config of 10,000 metrics × 256 label names took 462 MiB of live heap
// (about 190 bytes per label name and 700 per metric: the decoded params,
// the handler's label indexes, each sink's definition and label text);
// 10,000 × 8 took 22 MiB and 1,000 × 64 12 MiB. The estimate, the config's
// bytes plus 512 bytes per metric and 100 per label name for the handler
// and again for each backend the config feeds, is above each of these
// (549, 26 and 14 MiB with one backend).

// Estimate terms, in bytes.
const (
	costPerMetric = 512
	costPerLabel  = 100
)

// EstimateBytes is the memory a handler of p, built from configBytes
// bytes, takes with backends backends.
func EstimateBytes(p *config.Params, configBytes, backends int) int64 {
	var labels int64
	for _, m := range p.Metrics {
		if m != nil {
			labels += int64(len(m.LabelNames))
		}
	}
	perCopy := int64(len(p.Metrics))*costPerMetric + labels*costPerLabel
	return int64(configBytes) + perCopy*int64(1+backends)
}

// ErrTooLarge marks a config whose estimate alone exceeds the cache's
// bytes: it is refused, not built.
var ErrTooLarge = errors.New("handler config too large")
