package sinks_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
)

func TestSetReportsNewSinksBeforeUse(t *testing.T) {
	s := sinks.NewSet(10, time.Second)
	var seen []string
	s.OnNewSink(func(name string) { seen = append(seen, name) })
	s.AddPermanent("scrape", sinktest.New("prometheus"))
	q, err := s.Acquire("rw", func() (sinks.Sink, error) { return sinktest.New("remote_write:http://rw"), nil })
	require.NoError(t, err)
	require.Equal(t, []string{"prometheus", "remote_write:http://rw"}, seen)
	// A sink already built is shared, not new.
	q2, err := s.Acquire("rw", func() (sinks.Sink, error) { t.Fatal("built twice"); return nil, nil })
	require.NoError(t, err)
	require.Same(t, q, q2)
	require.Len(t, seen, 2)
	require.NoError(t, s.Close(context.Background()))
}
