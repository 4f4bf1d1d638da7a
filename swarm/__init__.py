"""The swarm node: transport, training, compression, aggregation, reputation, store, API and orchestration."""
