"""Pipelines: stages from ``labvault.yaml``, a content-keyed cache, local and Dask executors."""
