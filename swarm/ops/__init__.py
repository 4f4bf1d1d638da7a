"""What operators use: the HTTP API, metrics, the read-only node view they share, the healthcheck, the
dashboard and the local cluster launcher."""
