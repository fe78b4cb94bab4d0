"""HTTPS: the server's certificate and key, re-read when the files change.

The files are polled; when either one's size, mtime or inode changed, both are loaded into
the live ``SSLContext`` (new connections get the new certificate, open ones keep theirs).
A pair that does not load (say, the certificate written but not yet its key) is logged
and the previous pair stays in use until the next change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

from gateway.config.secret_files import warn_if_readable_by_others

log = logging.getLogger(__name__)

Version = tuple[tuple[int, int, int] | None, ...]


class TlsFiles:
    def __init__(self, cert_file: str | Path, key_file: str | Path,
                 interval: float = 5.0) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.interval = interval
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._version = self._stat()
        self.context.load_cert_chain(self.cert_file, self.key_file)  # fails at start: say so
        # Whoever reads the key can pass for this registry to every client.
        warn_if_readable_by_others(self.key_file, "TLS key")

    def _stat(self) -> Version:
        versions: list[tuple[int, int, int] | None] = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
                versions.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                versions.append(None)
        return tuple(versions)

    def reload_if_changed(self) -> bool:
        """Load the pair again if a file changed; True if the new pair is now served."""
        version = self._stat()
        if version == self._version:
            return False
        self._version = version
        try:
            # Tried on a context of its own first: a certificate that does not match the key
            # leaves the context it was loaded into with that certificate and no key, and
            # every handshake would fail (a half-written pair while a tool replaces them).
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert_file,
                                                                    self.key_file)
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate %s / key %s changed but do not load (%s); still "
                      "serving the previous pair", self.cert_file, self.key_file, exc)
            return False
        log.info("TLS certificate reloaded from %s", self.cert_file)
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.reload_if_changed()
