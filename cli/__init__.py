"""The `swarm` command: one module per subcommand, a thin layer over swarm/."""
