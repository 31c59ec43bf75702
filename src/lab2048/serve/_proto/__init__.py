"""Generated protobuf messages of proto/lab2048/inference/v1/inference.proto (see generate.py;
the gRPC bindings are lab2048/serve/rpc.py)."""
