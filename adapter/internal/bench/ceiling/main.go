// Command ceiling is the yardstick of docs/BENCHMARKS.md: a gRPC server that
// serves /metric.HandleMetricService/HandleMetric the way meshmetrics does
// (same codec, same server options) but only walks the request bytes, every
// instance and dimension, and answers. Nothing is converted, recorded or
// sent, so its throughput under a given load is the most any adapter could
// reach on this machine, client included.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/config"
)

func main() {
	addr := flag.String("address", "127.0.0.1:50100", "gRPC address")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(mixerpb.Codec{}), grpc.MaxRecvMsgSize(config.DefaultMaxRecvMsgSize))
	w := &walker{}
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "metric.HandleMetricService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "HandleMetric", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req handlemetric.Request
			if err := dec(&req); err != nil {
				return nil, err
			}
			defer req.Release()
			return w.walk(&req)
		}}},
		Metadata: "ceiling",
	}, w)
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		srv.Stop()
	}()
	fmt.Fprintf(os.Stderr, "ceiling: listening on %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
	}
	fmt.Fprintf(os.Stderr, "ceiling: walked %d instances\n", w.instances.Load())
}

type walker struct{ instances atomic.Int64 }

var reply = &modelpb.ReportResult{}

func (w *walker) walk(req *handlemetric.Request) (any, error) {
	if err := req.Parse(req.Received()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var in handlemetric.Instance
	for i := 0; i < req.NumInstances(); i++ {
		if err := req.Instance(i, &in); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	w.instances.Add(int64(req.NumInstances()))
	return reply, nil
}
