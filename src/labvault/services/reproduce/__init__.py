"""Reproduce a past run: a clean workspace of its code, data and config, a rerun, and a verdict.

Split by verb: ``record`` (what the run recorded), ``workspace`` (clone, patch, data, config),
``rerun`` (the new tracked run), ``compare`` (artifacts, metrics), ``report`` (Markdown, JSON),
``settings`` (tolerances), ``environment`` (drift), ``service`` (the order of it all).
"""

from __future__ import annotations

from labvault.services.reproduce.report import ReproduceReport, render_markdown, report_json
from labvault.services.reproduce.service import ENV_MODES, reproduce

__all__ = ["ENV_MODES", "ReproduceReport", "render_markdown", "report_json", "reproduce"]
