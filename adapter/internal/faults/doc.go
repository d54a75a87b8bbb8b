// Package faults holds meshmetrics' fault-injection suite (its tests): the
// adapter runs with its real gRPC server and real push sinks pointed at
// fake backends (libratotest, rwtest) that fail on demand, and every
// scenario reconciles the instances sent through the gRPC API exactly with
// what the backend stored plus the drop counters. docs/RELIABILITY.md states
// the guarantees these tests check.
package faults
