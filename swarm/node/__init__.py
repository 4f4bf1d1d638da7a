"""The asyncio shell around the consensus core and the ledger: wiring, the state worker, inbound admission."""
