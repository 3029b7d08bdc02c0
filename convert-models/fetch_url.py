"""Resumable HTTP(S) download with Python's standard library alone.

``download_alexnet.sh`` uses curl or wget when one is installed and this module
otherwise (or when ``ALEXNET_DOWNLOADER=python``).  Like ``curl -C -`` it appends to
an existing partial file by asking the server for the missing range, starts again if
the server does not support ranges, and treats "range not satisfiable" for a
non-empty file as "already complete"; the caller verifies the checksum.

Usage::

    python fetch_url.py [--no-resume] URL DESTINATION

Exit status 0 when the transfer completed, 3 when the server answered with an HTTP
error, 1 when the transfer failed otherwise or was cut short (the partial file is
kept for the next attempt).
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
USER_AGENT = "deep-spectrum-download_alexnet/1"


class DownloadError(Exception):
    """The transfer failed or ended early; the message says how far it got.

    ``status`` is the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def fetch(url: str, destination: str | os.PathLike, *, resume: bool = True,
          timeout: float = 60.0) -> int:
    """Download ``url`` into ``destination``, continuing a partial file.

    Parameters
    ----------
    url : str
        An ``http://`` or ``https://`` address.
    destination : str or os.PathLike
        The file to write.  With ``resume``, its current size is the offset to
        continue from.
    resume : bool
        Continue an existing file instead of starting over.
    timeout : float
        Seconds to wait for the connection and for each read.

    Returns
    -------
    int
        The size of the complete file in bytes.

    Raises
    ------
    DownloadError
        If the server answers with an error or the transfer breaks off; what was
        received stays in ``destination``.
    """
    destination = Path(destination)
    start = destination.stat().st_size if resume and destination.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            return start  # nothing left to fetch: the file is already complete
        raise DownloadError(f"{url}: HTTP error {exc.code} {exc.reason}", exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect: {reason}") from exc
    with response:
        mode = "wb"
        if start and response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != start:
                raise DownloadError(
                    f"{url}: the server sent range {response.headers.get('Content-Range')!r}"
                    f", not the requested bytes {start}-")
            mode = "ab"
        elif start:
            print(f"fetch_url.py: {url}: the server cannot resume; downloading from the start",
                  file=sys.stderr)
            start = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        try:
            with open(destination, mode) as handle:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    handle.write(chunk)
                    received += len(chunk)
        except (http.client.IncompleteRead, OSError) as exc:
            raise DownloadError(
                f"{url}: transfer interrupted after {start + received} bytes ({exc})") from exc
    if expected is not None and received < expected:
        raise DownloadError(f"{url}: transfer interrupted after {start + received} of "
                            f"{start + expected} bytes")
    return start + received


def main(argv: list[str] | None = None) -> int:
    """Command line: ``fetch_url.py [--no-resume] URL DESTINATION``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` if omitted.

    Returns
    -------
    int
        0 when complete, 3 for an HTTP error status, 1 for other failures.
    """
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="fetch_url.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--no-resume", action="store_true",
                        help="start over instead of continuing an existing file")
    args = parser.parse_args(argv)
    try:
        size = fetch(args.url, args.destination, resume=not args.no_resume)
    except DownloadError as exc:
        print(f"fetch_url.py: error: {exc}", file=sys.stderr)
        return 1 if exc.status is None else 3
    print(f"fetch_url.py: {args.destination}: {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
