"""Federated learning on Flower: the federation service (server) and the site agent (site/).

It runs from its own environment (``make federation-venv``) and talks to the platform only
through its public APIs: the registry's REST API and the Kafka topics. See docs/federation.md.
"""
