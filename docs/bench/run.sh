#!/usr/bin/env bash
# make bench: the Go benchmarks of the hot path (through benchstat) and the
# end-to-end harness, on this machine. Results land in docs/bench/; copy the
# figures into docs/BENCHMARKS.md when they change.
#
#   BENCH_COUNT=6      Go benchmark repetitions for benchstat
#   SOAK=10m           length of the RSS soak (0 skips it)
#   DURATION=10s       length of each end-to-end throughput run
#   ROUNDS=3           interleaved rounds per scenario
set -euo pipefail
cd "$(dirname "$0")/../.."

count=${BENCH_COUNT:-6}
out=docs/bench
benchstat="go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da"

echo "== Go benchmarks (count=$count) =="
go test -run '^$' -count "$count" -benchtime 20000x \
  -bench 'HotPath|BenchmarkHandle$|ParseAndReadInstances|GeneratedUnmarshal|NumberAndLabels|InsertSequential' \
  ./adapter/ ./adapter/internal/handler/ ./adapter/internal/ingest/mixer/handlemetric/ ./adapter/internal/handler/convert/ ./adapter/internal/ingest/mixer/dedup/ | tee "$out/gobench-hotpath.txt"
go test -run '^$' -count "$count" -benchtime 3x -bench 'Scrape|MemoryPerSeries' ./adapter/internal/sinks/exposition/ \
  | tee "$out/gobench-prometheus.txt"
go test -run '^$' -count "$count" -bench 'Consume' ./adapter/internal/sinks/exposition/ | tee -a "$out/gobench-prometheus.txt"
go test -run '^$' -count "$count" -benchtime 2s -bench 'Encode$|Consume|HandleToSink' ./adapter/internal/sinks/librato/ \
  | tee "$out/gobench-librato.txt"
go test -run '^$' -count "$count" -benchtime 2000x -bench 'ReadEntries|GeneratedUnmarshal|BuildBag|Program|Interpreter|BenchmarkEntries|ThroughGRPC' \
  ./adapter/internal/ingest/envoyals/logentry/ ./adapter/internal/ingest/envoyals/attrmap/ ./adapter/rules/expr/ ./adapter/internal/mixerless/ \
  | tee "$out/gobench-mixerless.txt"
go test -run '^$' -count "$count" -benchtime 1000x -bench 'Consume|Encode$' ./adapter/internal/sinks/otlp/ | tee "$out/gobench-otlp.txt"
go test -run '^$' -count "$count" -benchtime 20x -bench 'Export' ./adapter/internal/sinks/otlp/ | tee -a "$out/gobench-otlp.txt"
{
  $benchstat "$out/gobench-mixerless.txt"
  $benchstat "$out/gobench-hotpath.txt"
  $benchstat "$out/gobench-prometheus.txt"
  $benchstat "$out/gobench-librato.txt"
  $benchstat "$out/gobench-otlp.txt"
} | tee "$out/benchstat.txt"

echo "== end-to-end harness, Mixer-less mode (access logs) =="
go run ./adapter/internal/bench/alsharness -duration "${DURATION:-10s}" -rounds "${ROUNDS:-3}" -entries-per-message 25 -out "$out/als-results.md"
go run ./adapter/internal/bench/alsharness -duration "${DURATION:-10s}" -rounds "${ROUNDS:-3}" -entries-per-message 100 -out "$out/als-results-100.md"

echo "== end-to-end harness =="
go run ./adapter/internal/bench/harness -duration "${DURATION:-10s}" -rounds "${ROUNDS:-3}" -soak "${SOAK:-10m}" -out "$out/results.md"
