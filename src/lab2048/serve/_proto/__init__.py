"""Generated gRPC stubs of proto/lab2048/inference/v1/inference.proto (see generate.py)."""
