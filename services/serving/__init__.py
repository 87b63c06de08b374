"""Model serving: the Open Inference Protocol over gRPC and HTTP for every model with a
``production`` alias, hot swaps on registry events, canary and shadow rollouts,
adaptive micro-batching, and one prediction record per request on Kafka."""
