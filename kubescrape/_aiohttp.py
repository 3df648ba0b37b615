"""aiohttp, imported without loading the system trust store twice, nor the system mime.types, at import.

``aiohttp.connector`` builds two default SSL contexts when it is imported (``_SSL_CONTEXT_VERIFIED`` and
``_SSL_CONTEXT_UNVERIFIED``), and both load the system CA store (``set_default_verify_paths``): on the 2-core
bench machine that is 0.107 s CPU (0.055 s + 0.053 s, 144 CAs each), a fifth of the agent's import, for two
contexts kubescrape never uses. Every kubescrape client chooses its context itself:

* the scrape client passes ``ssl=`` with every request: the target's context from
  :func:`kubescrape.client.client_ssl_context` (or :func:`kubescrape.client.system_ssl_context`, which loads
  the system store itself) for https, ``False`` for http;
* the remote-write sender's and the discovery client's connectors are given their context, or ``False``.

So aiohttp's defaults are reached only through ``ssl=False`` (the unverified one, which never consults a CA),
or by code that passes no context at all. Imported through this module, the verified default holds no CA:
such a request fails verification (fails closed) instead of trusting anything. tests/test_imports.py proves
both: a request with aiohttp's default context is refused even by a server the system store trusts, and the
scrape client still verifies an https target against the system store.

Modules on the agent's run path import aiohttp from here (the first import wins; a later ``import aiohttp``
anywhere gets the same modules).
"""

from __future__ import annotations

import mimetypes
import ssl
import sys

__all__ = ["aiohttp", "web"]


def _import_without_default_trust() -> None:
    if "aiohttp.connector" in sys.modules:
        return
    # ssl.SSLContext is a Python subclass of _ssl._SSLContext: shadowing the C method on it for the length of
    # the import turns create_default_context()'s load_default_certs() and aiohttp's own call into no-ops.
    own = ssl.SSLContext.__dict__.get("set_default_verify_paths")
    ssl.SSLContext.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    # aiohttp.web_fileresponse builds a MimeTypes(), whose first instance runs mimetypes.init(): it reads
    # the system's mime.types into the module's own table, which that instance does not use (1.3 % of the
    # instructions to the first scrape). Marked as done for the length of the import, init() runs on the
    # first mimetypes.guess_type() instead, as if aiohttp had not been imported.
    mime_inited = mimetypes.inited
    mimetypes.inited = True
    try:
        import aiohttp.connector
        import aiohttp.web  # noqa: F401
    finally:
        mimetypes.inited = mime_inited
        if own is None:
            del ssl.SSLContext.set_default_verify_paths
        else:
            ssl.SSLContext.set_default_verify_paths = own  # type: ignore[method-assign]


_import_without_default_trust()

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
