"""What every service needs: settings, Kafka envelope and consumer loop, MongoDB, gRPC and HTTP
bootstrap, authentication, logging, metrics, artifacts, and the embedded local stack."""
