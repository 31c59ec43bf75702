"""The inference server (gRPC, micro-batched), its client and the generated stubs.

`batcher` gathers concurrent requests into forward passes, `server` is `lab2048 serve`,
`client` a small client reusing one channel (docs/serving.md).
"""
