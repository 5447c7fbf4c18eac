"""Data snapshots, split by verb: scan, build, status, checkout, diff, import; ``service`` ties them.

Deliberately empty of imports: ``data status`` imports only the lean modules it needs.
"""
