"""The model registry: the system of record for models, versions, aliases, artifacts,
lineage, approvals and the audit log, over gRPC and a REST mirror."""
