"""Artifact storage: `s3://bucket/prefix` through boto3, or `file:///path` on a local/shared disk.

Boundary: bytes in and out with integrity. Uploads are idempotent (an object that already exists with
the same sha256 is skipped), transient failures are retried with exponential backoff, large files go
up in multipart chunks, and a directory upload writes `_manifest.json` (sha256 + size per object) LAST,
so a prefix without a manifest is by definition incomplete. `fetch_tree` verifies every checksum.

S3 settings come from the environment like any AWS tool: endpoint `FAIRCALIB_S3_ENDPOINT` or
`AWS_ENDPOINT_URL[_S3]` (else the local server started by `faircalib storage up`, else AWS), region
`AWS_REGION`/`AWS_DEFAULT_REGION`/profile (default us-east-1), credentials from the default chain
(env, `AWS_PROFILE`, config files, instance roles). Credentials are never logged or stored.
Retry knobs: FAIRCALIB_S3_ATTEMPTS (default 8), FAIRCALIB_S3_BACKOFF (first delay s, default 0.5),
FAIRCALIB_S3_MAX_BACKOFF (default 8), FAIRCALIB_S3_MULTIPART_MB (threshold and part size, default 16).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from faircalib.service.errors import StorageError
from faircalib.service.seaweed import DEFAULT_BUCKET, DEFAULT_S3_PORT, local_endpoint, start_local_server

log = logging.getLogger(__name__)
MANIFEST = "_manifest.json"  # not "manifest.json": checkpoints ship their own of that name
MANIFEST_FORMAT = "faircalib-manifest/1"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None
    skipped: bool = False  # put_file found the identical object already there


@dataclass(frozen=True)
class StorageOptions:
    attempts: int = 8
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    multipart_bytes: int = 16 << 20
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> StorageOptions:
        env = os.environ
        return cls(attempts=int(env.get("FAIRCALIB_S3_ATTEMPTS", cls.attempts)),
                   backoff_s=float(env.get("FAIRCALIB_S3_BACKOFF", cls.backoff_s)),
                   max_backoff_s=float(env.get("FAIRCALIB_S3_MAX_BACKOFF", cls.max_backoff_s)),
                   multipart_bytes=int(float(env.get("FAIRCALIB_S3_MULTIPART_MB", 16)) * (1 << 20)))


def check_storage_uri(path: str, uri: object) -> str:
    """`s3://bucket[/prefix]` or `file:///absolute/path` (syntax only; reachability is checked at run)."""
    import re

    from faircalib.configs import check_str
    from faircalib.errors import ConfigError

    allowed = "s3://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH"
    uri = check_str(path, uri, allowed)
    if uri.startswith("s3://"):
        bucket = uri[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise ConfigError(f"{path}: bucket {bucket!r} is not a valid S3 bucket name "
                              "(3-63 characters: lowercase letters, digits, '.', '-'); expected " + allowed, field=path)
    elif uri.startswith("file://"):
        if not uri[7:].startswith("/"):
            raise ConfigError(f"{path}: {uri!r} must name an absolute path; expected {allowed}", field=path)
    else:
        raise ConfigError(f"{path}: {uri!r} has an unsupported scheme; expected {allowed}", field=path)
    return uri.rstrip("/")


class Storage(ABC):
    """A root URI plus object keys relative to it ('/'-separated)."""

    uri: str

    @abstractmethod
    def child(self, *parts: str) -> Storage: ...

    def url(self, key: str = "") -> str:
        return f"{self.uri}/{key}" if key else self.uri

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def put_file(self, local: str | Path, key: str, *, sha256: str | None = None,
                 progress: Callable[[int], None] | None = None) -> ObjectInfo: ...

    @abstractmethod
    def get_file(self, key: str, local: str | Path) -> None: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, sha256: str | None = None) -> ObjectInfo: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def check_writable(self) -> None:
        """Write, read back and delete a small probe object; StorageError with the reason otherwise."""
        key = f".faircalib-write-check-{os.getpid()}-{random.randrange(1 << 30):x}"
        data = b"faircalib write check\n"
        self.put_bytes(key, data)
        if self.get_bytes(key) != data:
            raise StorageError(f"storage {self.uri}: a written object did not read back identically")
        self.delete(key)


def open_storage(uri: str, options: StorageOptions | None = None, *, endpoint: str | None = None,
                 local_server: bool = False) -> Storage:
    """endpoint / local_server: an S3 endpoint decided elsewhere (see `endpoint_hint`), e.g. by the
    scheduler for its workers; default: resolve_endpoint() in this process."""
    uri = check_storage_uri("storage", uri)
    options = options or StorageOptions.from_env()
    if uri.startswith("file://"):
        return FileStorage(Path(uri[len("file://"):]))
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return S3Storage(bucket, prefix.strip("/"), options, endpoint=endpoint, local_server=local_server)


def endpoint_hint(uri: str) -> dict:
    """What a scheduler tells its workers about reaching `uri`: {} (each worker resolves its own
    endpoint from its environment, as cluster workers must), except when this process uses the embedded
    local server (`faircalib storage up`): a loopback server only local workers can reach, whose
    endpoint they may not know (Ray workers keep the environment of the moment Ray started)."""
    if not uri.startswith("s3://"):
        return {}
    endpoint, source = resolve_endpoint()
    return {"endpoint": endpoint, "local_server": True} if source == "faircalib storage up" else {}


# ---------------------------------------------------------------- file://
class FileStorage(Storage):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.uri = "file://" + str(self.root)

    def child(self, *parts: str) -> FileStorage:
        return FileStorage(self.root.joinpath(*[p.strip("/") for p in parts if p]))

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents and p != self.root.resolve():
            raise StorageError(f"object key {key!r} escapes the storage root {self.uri}")
        return p

    def head(self, key: str) -> ObjectInfo | None:
        p = self._path(key)
        if not p.is_file():
            return None
        return ObjectInfo(key=key, size=p.stat().st_size, sha256=sha256_file(p))

    def _write(self, key: str, writer: Callable[[Path], None]) -> Path:
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
            writer(tmp)
            os.replace(tmp, dest)  # atomic: readers never see a half-written object
        except OSError as e:
            raise StorageError(f"storage {self.uri} is not writable ({key}): {e.strerror or e}") from e
        return dest

    def put_file(self, local, key, *, sha256=None, progress=None) -> ObjectInfo:
        sha256 = sha256 or sha256_file(local)
        have = self.head(key)
        size = Path(local).stat().st_size
        if have and have.sha256 == sha256 and have.size == size:
            return ObjectInfo(key, size, sha256, skipped=True)
        self._write(key, lambda tmp: shutil.copyfile(local, tmp))
        if progress:
            progress(size)
        return ObjectInfo(key, size, sha256)

    def put_bytes(self, key, data, *, sha256=None) -> ObjectInfo:
        self._write(key, lambda tmp: tmp.write_bytes(data))
        return ObjectInfo(key, len(data), sha256 or hashlib.sha256(data).hexdigest())

    def get_file(self, key, local) -> None:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"object {self.url(key)} does not exist")
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, local)

    def get_bytes(self, key) -> bytes:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"object {self.url(key)} does not exist")
        return src.read_bytes()

    def delete(self, key) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"storage {self.uri}: cannot delete {key}: {e.strerror or e}") from e


# ---------------------------------------------------------------- s3://
def resolve_endpoint() -> tuple[str | None, str]:
    """(endpoint URL or None for AWS, where it came from)."""
    for var in ("FAIRCALIB_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var], var
    ep = local_endpoint()
    if ep:
        return ep, "faircalib storage up"
    return None, "AWS default"


NO_LOCAL_SERVER = ("the local S3 server is not running and no S3 endpoint is configured; start it with "
                   "`faircalib storage up`, or set FAIRCALIB_S3_ENDPOINT")


def uses_local_default(uri: str) -> bool:
    """The URI is in the embedded default's bucket (s3://faircalib/...)."""
    return uri == f"s3://{DEFAULT_BUCKET}" or uri.startswith(f"s3://{DEFAULT_BUCKET}/")


def endpoint_reachable(endpoint: str, timeout_s: float = 2.0) -> bool:
    """A TCP connection to the endpoint's host:port succeeds."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


_TRANSIENT_CODES = {"RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "ServiceUnavailable", "InternalError",
                    "Throttling", "ThrottlingException", "503", "500", "502", "504"}
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
               "AuthorizationHeaderMalformed", "403", "AccessDeniedException"}


def _classify(exc: BaseException) -> tuple[str, str]:
    """('transient'|'auth'|'nobucket'|'missing'|'other', short description) for an S3 exception chain."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    seen = set()
    e: BaseException | None = exc
    text = str(exc)
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
            return "nocreds", str(e)
        if isinstance(e, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError,
                          ConnectionError, TimeoutError)):
            return "transient", f"{type(e).__name__}: {e}"
        if isinstance(e, ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return "nobucket", code
            if code in ("NoSuchKey", "404", "NotFound"):
                return "missing", code
            if code in _AUTH_CODES:
                return "auth", code
            if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
                return "transient", code or str(status)
            return "other", f"{code}: {e}"
        e = e.__cause__ or e.__context__
    for code in _AUTH_CODES:  # S3UploadFailedError keeps only the message of the ClientError it wraps
        if f"({code})" in text:
            return "auth", code
    if "(NoSuchBucket)" in text:
        return "nobucket", "NoSuchBucket"
    if any(f"({c})" in text for c in _TRANSIENT_CODES) or "Could not connect" in text or "Connection" in text:
        return "transient", text.splitlines()[0][:200]
    return "other", f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str, options: StorageOptions, *, endpoint: str | None = None,
                 local_server: bool = False, _client=None):
        """endpoint: an explicit endpoint URL (else resolve_endpoint() decides when the client is made);
        local_server: it is the embedded SeaweedFS (anonymous requests allowed when no credentials)."""
        self.bucket, self.prefix, self.options = bucket, prefix, options
        self.uri = f"s3://{bucket}" + (f"/{prefix}" if prefix else "")
        self._client = _client
        self._endpoint = endpoint
        self._local_server = local_server

    def child(self, *parts: str) -> S3Storage:
        prefix = "/".join([p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/")])
        client = self.client  # resolves self._endpoint first, so the child's messages name the endpoint
        return S3Storage(self.bucket, prefix, self.options, endpoint=self._endpoint, local_server=self._local_server,
                         _client=client)

    @property
    def endpoint(self) -> str:
        self.client  # noqa: B018 - resolves the endpoint
        return self._endpoint or "AWS S3"

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            endpoint, source = (self._endpoint, "explicit") if self._endpoint else resolve_endpoint()
            if endpoint and (self._local_server or endpoint == _local_endpoint_or_none()):
                source = "faircalib storage up"
            session = boto3.session.Session()
            region = session.region_name or "us-east-1"
            kwargs = dict(retries={"max_attempts": 2, "mode": "standard"},
                          connect_timeout=self.options.connect_timeout_s, read_timeout=self.options.read_timeout_s,
                          s3={"addressing_style": "path"} if endpoint else {})
            if session.get_credentials() is None and source == "faircalib storage up":
                kwargs["signature_version"] = UNSIGNED  # the embedded server without credentials configured
            self._client = session.client("s3", endpoint_url=endpoint, region_name=region, config=Config(**kwargs))
            self._endpoint = endpoint
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable, *, missing_ok: bool = False):
        """Run fn with retries on transient errors; map the rest to one-line StorageErrors."""
        opts = self.options
        delay, t0 = opts.backoff_s, time.monotonic()
        for attempt in range(1, opts.attempts + 1):
            try:
                return fn()
            except Exception as e:
                kind, desc = _classify(e)
                where = f"{what} {self.uri} at {self._endpoint or 'AWS S3'}"
                if kind == "missing" and missing_ok:
                    return None
                if kind == "transient" and attempt < opts.attempts:
                    log.warning("%s failed (%s); retry %d/%d in %.1fs", where, desc, attempt, opts.attempts - 1, delay)
                    time.sleep(delay * (0.8 + 0.4 * random.random()))
                    delay = min(delay * 2, opts.max_backoff_s)
                    continue
                if kind == "transient":
                    raise StorageError(f"{where}: endpoint unreachable after {attempt} attempts over "
                                       f"{time.monotonic() - t0:.0f}s ({desc}); check that the S3 server is up "
                                       "(faircalib storage status) and FAIRCALIB_S3_ENDPOINT") from e
                if kind == "auth":
                    raise StorageError(f"{where}: access denied ({desc}); check AWS_ACCESS_KEY_ID / "
                                       "AWS_SECRET_ACCESS_KEY or AWS_PROFILE for this bucket") from e
                if kind == "nocreds":
                    # boto3 refuses to sign before it connects: name the real problem first
                    if self._endpoint is None and self.bucket == DEFAULT_BUCKET:
                        raise StorageError(f"{where}: {NO_LOCAL_SERVER}") from e
                    if self._endpoint is not None and not endpoint_reachable(self._endpoint):
                        raise StorageError(f"{where}: endpoint unreachable (nothing answers at "
                                           f"{self._endpoint}); check that the S3 server is up (faircalib "
                                           "storage status) and FAIRCALIB_S3_ENDPOINT") from e
                    raise StorageError(f"{where}: no S3 credentials found; set AWS_ACCESS_KEY_ID / "
                                       "AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from e
                if kind == "nobucket":
                    raise StorageError(f"{where}: bucket {self.bucket!r} does not exist; create it "
                                       "(`faircalib storage up` creates the default bucket)") from e
                if kind == "missing":
                    raise StorageError(f"{where}: object does not exist") from e
                raise StorageError(f"{where}: {desc}") from e

    def head(self, key: str) -> ObjectInfo | None:
        r = self._call(f"head {key} in", lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)),
                       missing_ok=True)
        if r is None:
            return None
        return ObjectInfo(key=key, size=int(r["ContentLength"]), sha256=r.get("Metadata", {}).get("sha256"))

    def put_file(self, local, key, *, sha256=None, progress=None) -> ObjectInfo:
        from boto3.s3.transfer import TransferConfig

        local = Path(local)
        sha256 = sha256 or sha256_file(local)
        size = local.stat().st_size
        have = self.head(key)
        if have and have.sha256 == sha256 and have.size == size:
            return ObjectInfo(key, size, sha256, skipped=True)
        mp = self.options.multipart_bytes
        cfg = TransferConfig(multipart_threshold=mp, multipart_chunksize=mp, max_concurrency=4, use_threads=True)
        self._call(f"upload {key} to", lambda: self.client.upload_file(
            str(local), self.bucket, self._key(key), ExtraArgs={"Metadata": {"sha256": sha256}}, Config=cfg,
            Callback=progress))
        return ObjectInfo(key, size, sha256)

    def put_bytes(self, key, data, *, sha256=None) -> ObjectInfo:
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        self._call(f"upload {key} to", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, Metadata={"sha256": sha256}))
        return ObjectInfo(key, len(data), sha256)

    def get_file(self, key, local) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        self._call(f"download {key} from", lambda: self.client.download_file(self.bucket, self._key(key), str(tmp)))
        os.replace(tmp, local)

    def get_bytes(self, key) -> bytes:
        return self._call(f"read {key} from", lambda: self.client.get_object(
            Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def delete(self, key) -> None:
        self._call(f"delete {key} in", lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def ensure_bucket(self) -> bool:
        """Create the bucket if missing (for the embedded server); True when it was created."""
        def _make():
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return False
            except Exception as e:
                if _classify(e)[0] not in ("missing", "nobucket", "other"):
                    raise
            self.client.create_bucket(Bucket=self.bucket)
            return True
        return self._call("create bucket", _make)


def _local_endpoint_or_none() -> str | None:
    return local_endpoint()


def storage_up(port: int = DEFAULT_S3_PORT, bucket: str = DEFAULT_BUCKET) -> dict:
    """Start the embedded local S3 server in the background (idempotent) and create the bucket."""
    state = start_local_server(port)
    s3 = S3Storage(bucket, "", StorageOptions.from_env(), endpoint=state["endpoint"])
    state["bucket_created"] = s3.ensure_bucket()
    state["bucket"] = bucket
    return state


# ---------------------------------------------------------------- trees + manifests
def _files(local_dir: Path) -> list[tuple[str, Path]]:
    out = []
    for p in sorted(local_dir.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST:
            out.append((p.relative_to(local_dir).as_posix(), p))
    return out


def upload_tree(storage: Storage, local_dir: str | Path, *, meta: dict | None = None,
                on_object: Callable[[ObjectInfo], None] | None = None,
                extra_objects: dict[str, dict] | None = None,
                progress: Callable[[dict], None] | None = None) -> dict:
    """Upload every file under local_dir (idempotently), then `_manifest.json` LAST.
    `extra_objects` ({key: {sha256, size}}) lists objects already in this prefix (e.g. uploaded by an
    earlier stage) so the manifest covers them too. progress: faircalib.progress `transfer` events
    (direction "upload", bytes done / total, the current key). Returns the manifest dict."""
    local_dir = Path(local_dir)
    objects: dict[str, dict] = dict(extra_objects or {})
    files = _files(local_dir)
    total = sum(p.stat().st_size for _, p in files)
    done = 0
    for key, path in files:
        size = path.stat().st_size
        sent = [0]

        def chunk(n: int, key=key) -> None:  # bytes as they go (S3 multipart callbacks)
            sent[0] += n
            if progress is not None:
                progress({"event": "transfer", "direction": "upload", "key": key,
                          "done": min(total, done + sent[0]), "total": total})

        info = storage.put_file(path, key, progress=chunk if progress is not None else None)
        done += size
        objects[key] = {"sha256": info.sha256, "size": info.size}
        if progress is not None:
            progress({"event": "transfer", "direction": "upload", "key": key, "done": done, "total": total})
        if on_object:
            on_object(info)
    manifest = write_manifest(storage, objects, meta)
    keep_local_manifest(local_dir, manifest)
    return manifest


def keep_local_manifest(local_dir: Path, manifest: dict) -> None:
    """A copy of the uploaded manifest next to the files it lists (never uploaded as an object itself),
    so the job can repair the bucket's copy from it (orchestrator.seal)."""
    data = json.dumps({k: v for k, v in manifest.items() if k != "manifest_object"}, indent=1, sort_keys=True).encode()
    if hashlib.sha256(data).hexdigest() == manifest["manifest_object"]["sha256"]:
        (Path(local_dir) / MANIFEST).write_bytes(data)


def write_manifest(storage: Storage, objects: dict[str, dict], meta: dict | None = None) -> dict:
    """Write the manifest; returns the manifest plus `manifest_object` ({sha256, size} of the file)."""
    manifest = {"format": MANIFEST_FORMAT, "complete": True, "root": storage.uri,
                "objects": dict(sorted(objects.items())), "meta": meta or {}}
    info = storage.put_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return {**manifest, "manifest_object": {"sha256": info.sha256, "size": info.size}}


def read_manifest(storage: Storage) -> dict:
    if storage.head(MANIFEST) is None:
        raise StorageError(f"{storage.uri} has no {MANIFEST}: the upload is incomplete or the path is wrong")
    try:
        manifest = json.loads(storage.get_bytes(MANIFEST))
    except json.JSONDecodeError as e:
        raise StorageError(f"{storage.url(MANIFEST)} is not valid JSON ({e.msg}); the upload is corrupt") from e
    if manifest.get("format") != MANIFEST_FORMAT or not manifest.get("complete"):
        raise StorageError(f"{storage.url(MANIFEST)}: unknown format {manifest.get('format')!r} or incomplete")
    return manifest


def fetch_tree(storage: Storage, dest: str | Path, *, only: Iterable[str] | None = None,
               progress: Callable[[dict], None] | None = None) -> dict:
    """Download the objects the manifest lists (all, or those under the `only` key prefixes) into
    dest and verify each sha256 and size; StorageError naming the object on any mismatch. progress:
    faircalib.progress `transfer` events (direction "download", bytes done / total, after each object)."""
    dest = Path(dest)
    manifest = read_manifest(storage)
    prefixes = tuple(only) if only else None
    wanted = [(k, w) for k, w in manifest["objects"].items() if not prefixes or k.startswith(prefixes)]
    total, done = sum(int(w["size"]) for _, w in wanted), 0
    for key, want in wanted:
        target = dest / key
        done += int(want["size"])
        if target.is_file() and target.stat().st_size == want["size"] and sha256_file(target) == want["sha256"]:
            if progress is not None:
                progress({"event": "transfer", "direction": "download", "key": key, "done": done, "total": total})
            continue  # already fetched and intact
        storage.get_file(key, target)
        got_size, got = target.stat().st_size, sha256_file(target)
        if got != want["sha256"] or got_size != want["size"]:
            bad = target.with_name(target.name + ".corrupt")
            os.replace(target, bad)
            raise StorageError(f"checksum mismatch for {storage.url(key)}: manifest says sha256 "
                               f"{want['sha256'][:16]}... ({want['size']} B), got {got[:16]}... ({got_size} B); "
                               f"the object was modified or corrupted (kept as {bad})")
        if progress is not None:
            progress({"event": "transfer", "direction": "download", "key": key, "done": done, "total": total})
    (dest / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
