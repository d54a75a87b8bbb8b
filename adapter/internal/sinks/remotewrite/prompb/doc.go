// Package prompb holds the gogo-generated messages of Prometheus remote
// write 1.0 (WriteRequest, TimeSeries, Label, Sample); `make generate` writes
// the .pb.go files from the .proto files here.
package prompb
