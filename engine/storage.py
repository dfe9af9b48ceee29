"""Where a log root lives: a local directory (a `pathlib.Path`, the recording path, no fsspec)
or, for reading, any fsspec URL such as ``s3://bucket/prefix`` (a `RemotePath`).

`RemotePath` is the small part of `Path` the log's readers use (``/``, ``name``, ``iterdir``,
``is_dir``, ``is_file``, ``glob``) plus `open_read()`, a seekable file whose reads are HTTP range
requests through fsspec's read-ahead cache: walking frame headers and skipping frames costs no
download of what is skipped past the cache block.

S3 and S3-compatible stores (MinIO, Ceph, moto): credentials come from the standard AWS
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, ...), the
endpoint from AWS_ENDPOINT_URL or ``[storage] endpoint_url`` in mia.toml (`configure`).
fsspec and s3fs are optional (``pip install 'mia[s3]'``); they are imported on first use only.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, TypeVar

from .config import ConfigBase
from .errors import LogError, MiaError, UsageError

T = TypeVar("T")

ENDPOINT_ENV = "AWS_ENDPOINT_URL"
# fsspec read-ahead block: a cache miss fetches what was asked plus this much. Big enough that
# a run of wanted frames is few requests, small enough that a seek by time wastes little.
READ_BLOCK = 1 << 20

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# the libraries under fsspec whose exceptions mean "the store failed", not "mia has a bug"
_BACKENDS = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3",
                       "requests", "gcsfs", "adlfs"})


class StorageError(LogError):
    """Object storage failed (unreachable, refused, throttled): one line, with the URL."""


def guarded(what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(...)`, with a store's failure as StorageError naming `what` (FileNotFoundError
    passes: callers treat a missing object as an answer)."""
    try:
        return fn(*args, **kwargs)
    except (FileNotFoundError, MiaError):
        raise
    except Exception as exc:
        if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _BACKENDS:
            raise StorageError(f"{what}: {type(exc).__name__}: {exc}") from None
        raise


class StorageConfig(ConfigBase):
    """The ``[storage]`` table: object storage the log is read from and pushed to."""

    endpoint_url: str = ""  # S3-compatible endpoint (MinIO, Ceph); AWS_ENDPOINT_URL wins


_configured = StorageConfig()


def configure(config: StorageConfig) -> None:
    """Set the ``[storage]`` table URLs are opened with (the CLI calls this from mia.toml)."""
    global _configured
    _configured = config


def is_url(root: str | os.PathLike) -> bool:
    """True for a URL other than file:// (which is a local path)."""
    s = os.fspath(root) if not isinstance(root, RemotePath) else str(root)
    return bool(_URL_RE.match(s)) and not s.startswith("file://")


def local_or_remote(root: str | os.PathLike | RemotePath) -> Path | RemotePath:
    """A local `Path` for a path (or file:// URL), a `RemotePath` for any other URL."""
    if isinstance(root, RemotePath):
        return root
    s = os.fspath(root)
    if s.startswith("file://"):
        return Path(s[len("file://"):])
    if is_url(s):
        return RemotePath.from_url(s)
    return Path(s)


def storage_options(protocol: str) -> dict[str, Any]:
    """fsspec options for `protocol`: for S3, the endpoint of an S3-compatible store."""
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get(ENDPOINT_ENV) or _configured.endpoint_url
        if endpoint:
            return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a URL; a clear error when fsspec is missing."""
    try:
        import fsspec
    except ImportError:
        raise UsageError(f"reading {url} needs fsspec and its backend: "
                         f"pip install 'mia[s3]'") from None
    protocol = url.split("://", 1)[0].lower()
    try:
        fs, path = fsspec.url_to_fs(url, **storage_options(protocol))
    except ImportError as exc:
        raise UsageError(f"reading {url} needs a backend fsspec lacks: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"cannot open {url}: {exc}") from None
    return fs, path.rstrip("/")


class RemotePath:
    """A file or folder under an fsspec filesystem, shaped like the part of `Path` the log
    readers use. Listings carry type and size, so walking a day costs one request."""

    __slots__ = ("fs", "path", "_info")

    def __init__(self, fs: Any, path: str, info: dict | None = None) -> None:
        self.fs = fs
        self.path = path
        self._info = info

    @classmethod
    def from_url(cls, url: str) -> RemotePath:
        fs, path = filesystem(url)
        return cls(fs, path)

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __fspath__(self) -> str:  # so str-taking code paths fail loudly rather than go local
        raise TypeError(f"{self} is not a local path")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: RemotePath) -> bool:
        return self.path < other.path

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.fs, f"{self.path}/{name}")

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    def _stat(self) -> dict | None:
        if self._info is None:
            try:
                self._info = guarded(str(self), self.fs.info, self.path)
            except FileNotFoundError:
                return None
        return self._info

    def is_dir(self) -> bool:
        if self._info is not None:
            return self._info.get("type") == "directory"
        return bool(guarded(str(self), self.fs.isdir, self.path))

    def is_file(self) -> bool:
        st = self._stat()
        return st is not None and st.get("type") == "file"

    def exists(self) -> bool:
        return self.is_dir() or self.is_file()

    def size(self) -> int:
        st = self._stat()
        if st is None:
            raise FileNotFoundError(str(self))
        return int(st.get("size") or 0)

    def stat(self) -> os.stat_result:
        """Size and modification time, as `Path.stat` gives them (no other field is known)."""
        st = self._stat()
        if st is None:
            raise FileNotFoundError(str(self))
        when = st.get("LastModified") or st.get("mtime") or st.get("last_modified") or 0
        if hasattr(when, "timestamp"):
            when = when.timestamp()
        when = float(when)
        size = int(st.get("size") or 0)
        return os.stat_result((0o100444, 0, 0, 1, 0, 0, size, int(when), int(when), int(when),
                               when, when, when, int(when * 1e9), int(when * 1e9),
                               int(when * 1e9)))

    def iterdir(self) -> Iterator[RemotePath]:
        try:
            entries = guarded(str(self), self.fs.ls, self.path, detail=True)
        except FileNotFoundError:
            return
        for e in entries:
            path = e["name"].rstrip("/")
            if path == self.path:
                continue
            yield RemotePath(self.fs, path, e)

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        for p in self.iterdir():
            if fnmatch.fnmatchcase(p.name, pattern):
                yield p

    def segment_dates(self, is_date: Callable[[str], bool],
                      is_segment: Callable[[RemotePath], object]) -> list[str]:
        """Names of the date folders under this root holding a segment, sorted: one listing
        of the objects two levels down (paged by the store), not one request per day."""
        try:
            found = guarded(str(self), self.fs.find, self.path, maxdepth=2)
        except FileNotFoundError:
            return []
        out = set()
        for p in found:
            rel = p[len(self.path):].strip("/").split("/")
            if len(rel) == 2 and is_date(rel[0]) and is_segment(RemotePath(self.fs, p)):
                out.add(rel[0])
        return sorted(out)

    def open_read(self, block_size: int = READ_BLOCK) -> BinaryIO:
        """A seekable binary file read by range requests (fsspec read-ahead cache)."""
        return GuardedFile(guarded(str(self), self.fs.open, self.path, "rb",
                                   block_size=block_size, cache_type="readahead"), str(self))

    def read_bytes(self) -> bytes:
        return guarded(str(self), self.fs.cat_file, self.path)


class GuardedFile:
    """A remote file whose store failures surface as StorageError (read, seek, tell, close)."""

    __slots__ = ("_f", "_what")

    def __init__(self, f: BinaryIO, what: str) -> None:
        self._f = f
        self._what = what

    def read(self, n: int = -1) -> bytes:
        return guarded(self._what, self._f.read, n)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()


def local_only(root: Path | RemotePath, what: str) -> Path:
    """`root` when it is local, else UsageError: writing and repair are local only."""
    if isinstance(root, RemotePath):
        raise UsageError(f"{what} needs a local data directory, not {root}: recording stays "
                         f"local (upload closed days with `mia push`)")
    return root
