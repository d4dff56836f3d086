"""Durable background jobs: the `jobs` table (the machinery lives in `core/jobs`)."""
