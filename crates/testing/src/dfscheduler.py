#!/usr/bin/env python3
"""The least of a Dragonfly scheduler that lets a real dfdaemon start.

dfdaemon (dragonfly-client 1.5) will not start without a scheduler that
answers gRPC's health check and takes its AnnounceHost; the real scheduler
is a Go program that cannot be built here (no Go module proxy). This one
answers those two calls (and DeleteHost at exit) and refuses everything
else with UNIMPLEMENTED, so every download's AnnouncePeer fails and the
daemon fetches from the origin itself ("back to source"): one daemon is a
node-local piece cache, with no peers. Loopback only; raw bytes, no .proto.

Usage: dfscheduler.py PORT   (prints "ready" once listening)
"""
import sys
from concurrent import futures

import grpc

# Serialized answers: HealthCheckResponse{status: SERVING} and Empty.
ANSWERS = {
    "/grpc.health.v1.Health/Check": b"\x08\x01",
    "/scheduler.v2.Scheduler/AnnounceHost": b"",
    "/scheduler.v2.Scheduler/DeleteHost": b"",
}


class Handler(grpc.GenericRpcHandler):
    def service(self, details):
        method = details.method
        if method in ANSWERS:
            answer = ANSWERS[method]
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: answer)

        def refuse(requests, ctx):
            print(f"refused {method}", flush=True)
            ctx.abort(grpc.StatusCode.UNIMPLEMENTED, f"stand-in scheduler: {method}")

        return grpc.stream_stream_rpc_method_handler(refuse)


def main():
    port = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((Handler(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
