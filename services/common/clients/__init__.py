"""Typed async gRPC clients for the services other services call."""
