"""Backups in OpenStack Swift, laid out exactly as upstream Trove does it.

The stream is cut into segments of at most ``backup_segment_max_size`` named
``<name>_00000000``, ``<name>_00000001``...; each segment's MD5 is checked
against the ETag Swift returns.  The segments become a Static Large Object
whose ETag, the backup's checksum, is the MD5 of the segments' MD5s.  The
final object is checked with a HEAD.  Any failure removes what was
uploaded.  Requests carry the end user's token from the request context.

Upstream Trove copied a lone segment to the final name (``X-Copy-From``)
and deleted it.  That copy makes Swift read and write the whole backup a
second time (a third of a 1 GiB backup's time here), so a lone segment
becomes a one-segment SLO instead: Trove deletes it the same way as any
large backup (``multipart-manifest=delete``, its segments included), and
a restore reads it like any object.  Upstream's single objects still
restore.

A backup with a file index (the list of files an incremental backup
builds on) keeps it as the SLO's last segment, ``<name>_index``: the
backup's checksum covers it, Trove's delete removes it with the rest, and
``load_index`` reads it alone, verified against the manifest and the
manifest against the checksum, without downloading the data.  Metadata
keys are sent as upstream Trove sent them (``parent_location`` as
``X-Object-Meta-parent-location``) and read back with ``_`` for ``-``.
"""

import contextlib
import hashlib
import json
import urllib.parse

from oslo_config import cfg
from oslo_log import log as logging
from swiftclient import client as swift_client
from swiftclient import exceptions as swift_exc

from trove.guestagent.backup.storage import base

CONF = cfg.CONF
LOG = logging.getLogger(__name__)
INDEX = '_index'
META = 'x-object-meta-'


def storage_url(context):
    """The project's Swift URL: swift_url + project, or the catalog's."""
    if CONF.swift_url:
        return CONF.swift_url + (context.project_id or '')
    for service in context.service_catalog or []:
        if service.get('type') != CONF.swift_service_type:
            continue
        url = _endpoint(service.get('endpoints') or [])
        if url:
            return url
    raise base.StorageError(
        "No Swift endpoint: set [DEFAULT] swift_url or send a service "
        "catalog with an '%s' service in region %s." % (
            CONF.swift_service_type, CONF.os_region_name))


def _endpoint(endpoints):
    interface = CONF.swift_endpoint_type.replace('URL', '')
    for endpoint in endpoints:
        region = endpoint.get('region') or endpoint.get('region_id')
        if region not in (None, CONF.os_region_name):
            continue
        if CONF.swift_endpoint_type in endpoint:
            return endpoint[CONF.swift_endpoint_type]
        if endpoint.get('interface') == interface and endpoint.get('url'):
            return endpoint['url']
    return None


class SwiftStorage(base.Storage):

    def __init__(self, context, container=None):
        self.url = storage_url(context)
        self.container = container or CONF.backup_swift_container
        self._token = context.auth_token
        self.segment_size = CONF.backup_segment_max_size

    def _connection(self, url=None):
        return swift_client.Connection(
            preauthurl=url or self.url, preauthtoken=self._token,
            retries=3, timeout=120)

    def location(self, name):
        return '%s/%s/%s' % (self.url, self.container, name)

    def save(self, name, chunks, metadata=None, index=None):
        conn = self._connection()
        segments = []
        uploading = False
        try:
            conn.put_container(self.container)
            uploading = True
            for number, piece in enumerate(base.split(chunks,
                                                     self.segment_size)):
                segments.append(self._put_segment(
                    conn, '%s_%08d' % (name, number), piece))
            if not segments:
                raise base.StorageError("The backup stream of %s was "
                                        "empty." % name)
            if index is not None:
                segments.append(self._put_segment(
                    conn, name + INDEX, [index()]))
            saved = self._finish(conn, name, segments,
                                 _meta_headers(metadata))
        except BaseException:
            if uploading:
                self._remove_segments(conn, segments, name)
            raise
        LOG.info("Stored backup %s: %d bytes in %d segment(s), checksum "
                 "%s", saved.location, saved.size, len(segments),
                 saved.checksum)
        return saved

    def _put_segment(self, conn, segment, piece):
        hashing = base.Hashing(piece)
        try:
            etag = conn.put_object(self.container, segment, hashing)
        except swift_exc.ClientException as exc:
            # A stream cannot be sent twice: when the connection breaks,
            # swiftclient says it cannot "reset contents"; the connection
            # error behind that is the cause worth reporting.
            cause = exc.__context__ if exc.http_status is None else None
            raise base.StorageError(
                "Uploading segment %s to Swift failed: %s" % (
                    segment, cause or exc)) from exc
        except OSError as exc:
            raise base.StorageError(
                "Uploading segment %s to Swift failed: %s" % (
                    segment, exc)) from exc
        if etag.strip('"') != hashing.hexdigest:
            raise base.ChecksumMismatch(
                "Segment %s: Swift stored ETag %s, the agent sent MD5 %s" % (
                    segment, etag, hashing.hexdigest))
        return {'path': '/%s/%s' % (self.container, segment),
                'etag': hashing.hexdigest, 'size_bytes': hashing.size,
                'name': segment}

    def _finish(self, conn, name, segments, headers):
        checksum = _slo_etag(segments)
        manifest = [{k: s[k] for k in ('path', 'etag', 'size_bytes')}
                    for s in segments]
        conn.put_object(self.container, name, json.dumps(manifest),
                        headers=headers,
                        query_string='multipart-manifest=put')
        self._check(conn, name, checksum)
        return base.SavedObject(self.location(name), checksum,
                                sum(s['size_bytes'] for s in segments))

    def _check(self, conn, name, checksum):
        etag = conn.head_object(self.container, name)['etag'].strip('"')
        if etag != checksum:
            raise base.ChecksumMismatch(
                "Object %s: Swift reports ETag %s, expected %s" % (
                    name, etag, checksum))

    def _remove_segments(self, conn, segments, name):
        """Remove all a failed save may have left: segments, manifest."""
        names = [s['name'] for s in segments]
        names += ['%s_%08d' % (name, len(segments)), name + INDEX, name]
        for segment in names:
            try:
                conn.delete_object(self.container, segment)
            except swift_exc.ClientException as exc:
                if exc.http_status != 404:
                    LOG.error("Could not remove segment %s of a failed "
                              "backup: %s", segment, exc)
            except Exception as exc:
                LOG.error("Could not remove segment %s of a failed "
                          "backup: %s", segment, exc)

    def load(self, location, checksum=None):
        url, container, name = _parse_location(location)
        conn = self._connection(url)
        manifest = _manifest(conn, container, name)
        if manifest is None:
            yield from _verified(conn, container, name, checksum)
            return
        digests = []
        for segment in manifest:
            if _is_index(segment, name):
                digests.append(segment['hash'])
                continue
            seg_container, seg_name = _segment_name(segment)
            digest = hashlib.md5(usedforsecurity=False)
            yield from _verified(conn, seg_container, seg_name,
                                 segment['hash'], digest)
            digests.append(digest.hexdigest())
        _compare(name, base.composite_checksum(digests), checksum)

    def load_index(self, location, checksum=None):
        url, container, name = _parse_location(location)
        conn = self._connection(url)
        manifest = _manifest(conn, container, name)
        if not manifest or not _is_index(manifest[-1], name):
            return None
        _compare(name, base.composite_checksum(
            [segment['hash'] for segment in manifest]), checksum)
        seg_container, seg_name = _segment_name(manifest[-1])
        return b''.join(_verified(conn, seg_container, seg_name,
                                  manifest[-1]['hash']))

    def metadata(self, location):
        url, container, name = _parse_location(location)
        headers = _head(self._connection(url), container, name)
        return {base.metadata_key(key[len(META):]): value
                for key, value in headers.items()
                if key.lower().startswith(META)}

    def delete(self, location):
        url, container, name = _parse_location(location)
        conn = self._connection(url)
        query = None
        if _manifest(conn, container, name) is not None:
            query = 'multipart-manifest=delete'
        conn.delete_object(container, name, query_string=query)


def _slo_etag(segments):
    return base.composite_checksum(s['etag'] for s in segments)


def _meta_headers(metadata):
    return {'X-Object-Meta-%s' % key.replace('_', '-'): str(value)
            for key, value in (metadata or {}).items()}


def _is_index(segment, name):
    return segment['name'].rsplit('/', 1)[-1] == name + INDEX


def _segment_name(segment):
    return segment['name'].lstrip('/').split('/', 1)


@contextlib.contextmanager
def _missing_as(error, message):
    """Swift's 404 inside the block raised as ``error(message)``."""
    try:
        yield
    except swift_exc.ClientException as exc:
        if exc.http_status == 404:
            raise error(message) from exc
        raise


def _head(conn, container, name):
    with _missing_as(base.BackupNotFound, "No backup object %s in "
                     "container %s" % (name, container)):
        return conn.head_object(container, name)


def _parse_location(location):
    url, container, name = location.rsplit('/', 2)
    return url, urllib.parse.unquote(container), urllib.parse.unquote(name)


def _manifest(conn, container, name):
    """The SLO's segment list, or None when the object is not an SLO."""
    headers = _head(conn, container, name)
    if headers.get('x-static-large-object', '').lower() != 'true':
        return None
    _headers, body = conn.get_object(container, name,
                                     query_string='multipart-manifest=get')
    return json.loads(body)


def _verified(conn, container, name, expected, digest=None):
    digest = digest or hashlib.md5(usedforsecurity=False)
    # A segment (data or index) missing under a manifest that is still
    # there: the backup is damaged.
    with _missing_as(base.ChecksumMismatch, "Backup object %s in container "
                     "%s is missing" % (name, container)):
        _headers, body = conn.get_object(container, name,
                                         resp_chunk_size=1024 * 1024)
    for chunk in body:
        digest.update(chunk)
        yield chunk
    _compare(name, digest.hexdigest(), expected)


def _compare(name, actual, expected):
    if expected and CONF.verify_swift_checksum_on_restore and (
            actual != expected.strip('"')):
        raise base.ChecksumMismatch(
            "Backup object %s: received bytes have checksum %s, the backup "
            "recorded %s" % (name, actual, expected))
