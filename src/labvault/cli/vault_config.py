"""``labvault config get/set/list`` and ``labvault vault show``: a vault's settings and where it lives."""

from __future__ import annotations

from typing import Any

import typer

from labvault.cli.context import open_local_vault
from labvault.cli.render import OUTPUT, human_bytes, print_json

__all__ = ["config_app", "vault_app"]

JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")

config_app = typer.Typer(help="Read and change the vault's settings (.labvault/config.json).", no_args_is_help=True)
vault_app = typer.Typer(help="The vault itself: where its metadata and objects live.", no_args_is_help=True)


def _settings(what: str) -> dict[str, Any]:
    from labvault.config import redact_url

    # The settings are the server's vault's (config.json on its machine): through a server, exit 2.
    with open_local_vault(what) as vault:
        config = vault.config
        return {
            "format_version": config.format_version,
            "database_url": redact_url(config.database_url) if config.database_url else None,
            "objects.url": redact_url(config.objects_url) if config.objects_url else None,
            "objects.cache_size": config.cache_size,
        }


@config_app.command("list")
def config_list(json_output: bool = JSON) -> None:
    """List the vault's settings (URLs are shown without credentials)."""
    settings = _settings("config list")
    if json_output:
        print_json([{"key": k, "value": v} for k, v in settings.items()])
        return
    OUTPUT.table(["key", "value"], [[k, "" if v is None else str(v)] for k, v in settings.items()])


@config_app.command("get")
def config_get(
    key: str = typer.Argument(..., help="A setting, e.g. objects.cache_size."), json_output: bool = JSON
) -> None:
    """Print one setting's value (empty when unset)."""
    from labvault.errors import ValidationError

    settings = _settings("config get")
    if key not in settings:
        raise ValidationError(f"unknown setting {key!r}", hint=f"known: {', '.join(settings)}")
    value = settings[key]
    if json_output:
        print_json({"key": key, "value": value})
    else:
        OUTPUT.line("" if value is None else str(value))


@config_app.command("set")
def config_set(
    key: str = typer.Argument(..., help="The setting: objects.cache_size."),
    value: str = typer.Argument(..., help="Its new value, e.g. 5GiB."),
) -> None:
    """Change a setting; only objects.cache_size (the read-through cache's bound) can be set."""
    from labvault.config import format_size

    with open_local_vault("config set") as vault:
        config = vault.set_config(key, value)
    OUTPUT.line(f"objects.cache_size = {format_size(config.cache_size)} ({config.cache_size} bytes)")


@vault_app.command("show")
def vault_show(json_output: bool = JSON) -> None:
    """Where the metadata and objects are (no credentials), the format version, the objects stored, the cache."""
    with open_local_vault("vault show") as vault:
        info = vault.describe()
    if json_output:
        print_json(
            {
                "path": info.path,
                "team": info.team,
                "metadata": info.metadata,
                "objects": info.objects,
                "format_version": info.format_version,
                "object_count": info.object_count,
                "object_bytes": info.object_bytes,
                "cache": {"size": info.cache_size, "bytes": info.cache_bytes, "files": info.cache_files},
            }
        )
        return
    OUTPUT.line(f"vault      {info.path}{' (team)' if info.team else ''}")
    OUTPUT.line(f"metadata   {info.metadata}")
    OUTPUT.line(f"objects    {info.objects}")
    OUTPUT.line(f"format     {info.format_version}")
    OUTPUT.line(f"stored     {info.object_count} objects, {human_bytes(info.object_bytes)}")
    OUTPUT.line(
        f"cache      {human_bytes(info.cache_bytes)} of {human_bytes(info.cache_size)} ({info.cache_files} files)"
    )
