"""Working through a team server: the same services as a local vault, over HTTP.

``LABVAULT_URI`` (with ``LABVAULT_TOKEN``), or what ``labvault login`` saved, names the server;
:func:`open_target` then returns a :class:`~labvault.client.vault.ServerVault` whose parts
(``.runs``, ``.data``, ``.registry``, ``.objects``, ...) answer as a local
:class:`~labvault.vault.Vault`'s do, with the server running every rule.
"""

from __future__ import annotations

from labvault.client.settings import ServerTarget, forget_login, save_login, server_target

__all__ = ["ServerTarget", "forget_login", "save_login", "server_target"]
