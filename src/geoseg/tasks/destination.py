"""Where a run's output goes: a local GeoPackage, or an object on S3 staged locally first.

An ``s3://bucket/key.gpkg`` output is written to a local staging file, then uploaded with boto3
(the ``s3`` extra). boto3 rather than GDAL's ``/vsis3/``: the finished file only needs copying,
and boto3's ``upload_file`` does multipart uploads of any size with retries, using the standard
AWS credential chain (environment, ``~/.aws``, instance or pod roles). S3 shows an object only
once its PUT, or the completion of its multipart upload, succeeds, so readers never see a
partial GeoPackage. The staging file and the run's batch cache live in a local folder keyed by
the output URI (under ``--cache-dir``, default ``$XDG_CACHE_HOME/geoseg``), so an interrupted
run resumes like a local one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from geoseg.errors import OptionsError, OutputError
from geoseg.tasks.sources import redact

S3_SCHEME = "s3://"


def output_location(output: str | os.PathLike[str]) -> Path | str:
    """An output as given: a local ``Path``, or an ``s3://`` URI kept as a string.

    Raises
    ------
    OptionsError
        A URI of another scheme, or an S3 URI without a bucket or key.
    """
    text = os.fspath(output)
    if text.startswith(S3_SCHEME):
        bucket, _, key = text.removeprefix(S3_SCHEME).partition("/")
        if not bucket or not key or key.endswith("/"):
            raise OptionsError(f"--output {redact(text)}: give s3://BUCKET/KEY.gpkg")
        return text
    if "://" in text:
        raise OptionsError(
            f"--output {redact(text)}: outputs go to a local path or s3://BUCKET/KEY.gpkg"
        )
    return Path(text)


def default_cache_dir() -> Path:
    """The local folder for remote outputs' staging files and batch caches."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geoseg"


def cache_anchor(output: Path | str, cache_dir: Path | None) -> Path:
    """The local path whose cache folder holds the run's batch results (see ``tasks.cache``).

    A local output without ``cache_dir`` is its own anchor, so batches sit beside it. Otherwise
    the anchor is ``CACHE_DIR/<name>-<digest of the output>/<name>`` (``CACHE_DIR`` defaulting
    to :func:`default_cache_dir`), which is also where an S3 output is staged before upload.
    """
    if isinstance(output, Path) and cache_dir is None:
        return output
    root = default_cache_dir() if cache_dir is None else cache_dir
    uri = output if isinstance(output, str) else str(output.resolve())
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    name = uri.rsplit("/", 1)[-1]
    return root / f"{Path(name).stem}-{digest}" / name


def check_s3_output(uri: str, overwrite: bool) -> None:
    """Refuse an S3 output that exists (unless ``overwrite``) or cannot be reached, up front.

    Raises
    ------
    OutputError
        boto3 is missing, the bucket does not exist or is not accessible, no credentials are
        found, or the object exists and ``overwrite`` is false.
    """
    bucket, key = split_s3(uri)
    client, errors = s3_client(uri)
    try:
        client.head_bucket(Bucket=bucket)
    except errors as exc:
        raise OutputError(
            f"{redact(uri)}: bucket {bucket} cannot be used ({s3_reason(exc)})"
        ) from exc
    try:
        client.head_object(Bucket=bucket, Key=key)
    except errors as exc:
        if s3_status(exc) != 404:
            raise OutputError(f"{redact(uri)}: cannot check the output ({s3_reason(exc)})") from exc
        return
    if not overwrite:
        raise OutputError(f"{redact(uri)} already exists; pass --overwrite to replace it")


def upload_output(local: Path, uri: str, overwrite: bool) -> None:
    """Upload the finished GeoPackage ``local`` to ``uri``; it appears there only when complete.

    Raises
    ------
    OutputError
        The object appeared meanwhile and ``overwrite`` is false, or the upload fails.
    """
    check_s3_output(uri, overwrite)
    bucket, key = split_s3(uri)
    client, errors = s3_client(uri)
    try:
        client.upload_file(str(local), bucket, key)
    except (*errors, OSError) as exc:
        raise OutputError(f"cannot upload the output to {redact(uri)} ({s3_reason(exc)})") from exc


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``."""
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    return bucket, key


def s3_client(uri: str) -> tuple[Any, tuple[type[Exception], type[Exception]]]:
    """A boto3 S3 client from the standard credential chain, and the errors it raises."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError as exc:
        raise OutputError(
            f"{redact(uri)}: writing to S3 needs boto3; pip install 'geoseg[s3]'"
        ) from exc
    errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
    return boto3.client("s3"), errors


def s3_status(exc: Exception) -> int | None:
    """The HTTP status of a botocore error, if it has one."""
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def s3_reason(exc: Exception) -> str:
    """One line saying why an S3 call failed, without request details or secrets."""
    status = s3_status(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if status == 404:
        text = "not found"
    elif status == 403:
        text = "access denied: check the AWS credentials and the bucket policy"
    return redact(text)
