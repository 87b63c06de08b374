"""The ingest service: raw events in, validated rows, labels and dead letters out."""
