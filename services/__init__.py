"""The MLOps platform: five services (ingest, trainer, registry, serving, monitor) and the CLI."""
