"""Archive ingest and training of small, deliberately cracked models on a CPU."""
