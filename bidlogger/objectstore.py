"""The object-store adapter: Parquet files from the outbox to S3 (boto3) or a local directory.

``s3://bucket/prefix`` uploads with boto3 (any S3-compatible endpoint: MinIO, Ceph, moto); an
empty setting or ``file:///dir`` copies into a directory with the same key layout, which DuckDB,
Spark or Athena-on-a-mount read as they are. boto3 blocks, so every call runs in a worker thread;
a file leaves the outbox only once the store has it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from bidlogger.errors import ObjectStoreError


class ObjectStore(Protocol):
    description: str

    async def put(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key``; ObjectStoreError when it cannot."""
        ...


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    async def put(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put, key, path)

    def _put(self, key: str, path: Path) -> None:
        target = self.root / key
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise ObjectStoreError(f"cannot store {key} in {self.root}: {exc}") from exc


class S3ObjectStore:
    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str = "", region: str = "us-east-1"
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.description = f"s3://{bucket}/{self.prefix}"
        config = Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}
        )
        self._client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region, config=config
        )

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put, key, path)

    def _put(self, key: str, path: Path) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_file(str(path), self.bucket, self.key(key))
        # upload_file wraps a refusal (a missing bucket, access denied) in boto3's own
        # S3UploadFailedError: any of them leaves the file waiting, and the upload is retried
        except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
            raise ObjectStoreError(f"cannot upload {key} to {self.description}: {exc}") from exc


def open_object_store(
    url: str, default_root: Path, *, endpoint_url: str = "", region: str = "us-east-1"
) -> ObjectStore:
    """The store named by the ``RTBFLEET_BIDLOGGER_OBJECT_STORE`` setting."""
    if not url:
        return LocalObjectStore(default_root)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalObjectStore(Path(parsed.path))
    if parsed.scheme == "s3" and parsed.netloc:
        return S3ObjectStore(parsed.netloc, parsed.path, endpoint_url=endpoint_url, region=region)
    raise ObjectStoreError(f"{url!r} is not s3://bucket[/prefix] or file:///dir")
