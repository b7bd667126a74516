"""Guest logs: Trove's ``guest_log_list`` / ``guest_log_action``.

A log is a file on the guest (CouchDB's server log, the agent's own log)
that its owner may publish into Swift, where ``trove log-save`` reads it.
The Swift layout is Trove's, so Trove's API and client find everything:
in the container ``guest_log_container_name``, new lines go to objects
``<instance id>/<datastore>-<log>/log-<UTC time>`` of at most
``guest_log_limit`` bytes (whole lines), and ``<instance id>/<datastore>-
<log>_metafile`` records how much of the file is published and a digest of
its first line, so a rotated file is noticed and published afresh.  Every
object expires after ``guest_log_expiry`` seconds.

Both logs are system logs: always on, published or discarded on request,
never enabled or disabled.  A log is shown to a tenant only when it is
listed in ``[<datastore>] guest_log_exposed_logs``; an admin context sees
all of them.

Only publish and discard need Swift.  Listing a log, or showing it, reads
its published state from Swift when an endpoint is configured (``swift_url``
or the request's service catalog); without one nothing can have been
published from here, and the file alone is shown.
"""

import contextlib
import datetime
import hashlib
import json
import os

from oslo_log import log as logging
import requests
from swiftclient import client as swift_client
from swiftclient import exceptions as swift_exc

from trove.common import cfg
from trove.common import exception
from trove.guestagent.backup.storage import base as storage_base
from trove.guestagent.backup.storage import swift as swift_storage

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

SYS = 'SYS'


class GuestLogError(exception.TroveError):
    """Swift could not be configured or reached for a guest log."""

    message = "Could not %(action)s guest log '%(log)s': %(reason)s"

    def __init__(self, action, log, reason):
        self.action = action
        self.log = log
        super().__init__(action=action, log=log, reason=reason)


class GuestLog:
    """One log file of this guest and its published copy in Swift."""

    def __init__(self, name, path):
        self.name = name
        self.path = path

    # -- the Swift layout (Trove's) ----------------------------------------

    @property
    def prefix(self):
        return '%s/%s-%s/' % (CONF.guest_id, CONF.datastore_manager,
                              self.name)

    @property
    def metafile(self):
        return self.prefix.rstrip('/') + '_metafile'

    @staticmethod
    def _headers():
        return {'X-Delete-After': str(CONF.guest_log_expiry)}

    # -- what Trove asks ---------------------------------------------------

    def show(self, conn=None):
        """Trove's view of the log; ``conn`` None: no Swift is configured,
        so nothing is published."""
        published, published_digest = self._published(conn)
        size, digest = self._file_state()
        rotated = published and (size < published
                                 or digest != published_digest)
        if rotated:
            status, pending = 'Rotated', size
        elif size > published:
            status = 'Partial' if published else 'Ready'
            pending = size - published
        elif size:
            status, pending = 'Published', 0
        else:
            status, pending = 'Unavailable', 0
        return {'name': self.name, 'type': SYS, 'status': status,
                'published': published, 'pending': pending,
                'container': (CONF.guest_log_container_name if published
                              else 'None'),
                'prefix': self.prefix if published else 'None',
                'metafile': self.metafile}

    def publish(self, conn):
        """Upload the lines written since the last publish."""
        if not os.path.exists(self.path):
            raise exception.BadRequest(
                "Log '%s' cannot be published: %s does not exist yet."
                % (self.name, self.path))
        published, published_digest = self._published(conn)
        size, digest = self._file_state()
        if published and (size < published or digest != published_digest):
            LOG.info("Log %s was rotated: discarding its published copy",
                     self.name)
            self.discard(conn)
            published = 0
        self._ensure_container(conn)
        with open(self.path, 'rb') as stream:
            stream.seek(published)
            for piece, lines in _pieces(stream, CONF.guest_log_limit):
                name = '%slog-%s' % (self.prefix, _utc_stamp())
                headers = dict(self._headers(),
                               **{'X-Object-Meta-Lines': str(lines)})
                conn.put_object(CONF.guest_log_container_name, name, piece,
                                headers=headers)
                published += len(piece)
                self._put_metafile(conn, published, digest)
        self._put_metafile(conn, published, digest)
        LOG.info("Published log %s up to byte %d", self.name, published)

    def discard(self, conn):
        """Delete the published copy."""
        container = CONF.guest_log_container_name
        try:
            _headers, listing = conn.get_container(container,
                                                   prefix=self.prefix,
                                                   full_listing=True)
        except swift_exc.ClientException as exc:
            if exc.http_status == 404:
                return
            raise
        for name in [obj['name'] for obj in listing] + [self.metafile]:
            try:
                conn.delete_object(container, name)
            except swift_exc.ClientException as exc:
                if exc.http_status != 404:
                    raise
        LOG.info("Discarded the published copy of log %s", self.name)

    # -- helpers -----------------------------------------------------------

    def _file_state(self):
        """(size, md5 of the first line) of the log file now."""
        try:
            with open(self.path, 'rb') as stream:
                first = stream.readline()
                size = os.fstat(stream.fileno()).st_size
        except FileNotFoundError:
            return 0, None
        return size, hashlib.md5(first, usedforsecurity=False).hexdigest()

    def _published(self, conn):
        """(bytes published, first-line digest then) from the metafile."""
        if conn is None:
            return 0, None
        try:
            _headers, body = conn.get_object(CONF.guest_log_container_name,
                                             self.metafile)
        except swift_exc.ClientException as exc:
            if exc.http_status == 404:
                return 0, None
            raise
        meta = json.loads(body)
        return int(meta.get('log_size') or 0), meta.get('log_header_digest')

    def _put_metafile(self, conn, published, digest):
        meta = {'log_name': self.name, 'log_type': SYS,
                'log_file': self.path, 'log_size': published,
                'log_header_digest': digest}
        conn.put_object(CONF.guest_log_container_name, self.metafile,
                        json.dumps(meta), headers=self._headers())

    def _ensure_container(self, conn):
        try:
            conn.head_container(CONF.guest_log_container_name)
        except swift_exc.ClientException as exc:
            if exc.http_status != 404:
                raise
            conn.put_container(CONF.guest_log_container_name,
                               headers=self._headers())


def _pieces(stream, limit):
    """(bytes, line count) pieces of whole lines, each at most ``limit``
    bytes (a longer line is a piece of its own)."""
    piece, lines = [], 0
    size = 0
    for line in stream:
        if piece and size + len(line) > limit:
            yield b''.join(piece), lines
            piece, lines, size = [], 0, 0
        piece.append(line)
        lines += 1
        size += len(line)
    if piece:
        yield b''.join(piece), lines


def _utc_stamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y-%m-%dT%H:%M:%S.%f')


class GuestLogs:
    """The logs a datastore exposes, with Trove's access rules."""

    def __init__(self, logs):
        self.logs = {log.name: log for log in logs}

    def _exposed(self, context):
        names = [n.strip() for n in CONF.get(
            CONF.datastore_manager).guest_log_exposed_logs.split(',')
            if n.strip()]
        return [log for log in self.logs.values()
                if log.name in names or getattr(context, 'is_admin', False)]

    @staticmethod
    def _connection(context):
        return swift_client.Connection(
            preauthurl=swift_storage.storage_url(context),
            preauthtoken=context.auth_token, retries=3, timeout=60)

    def _optional_connection(self, context):
        """A connection when a Swift endpoint is configured, else None."""
        try:
            return self._connection(context)
        except storage_base.StorageError:
            return None

    def _required_connection(self, context, action, name):
        try:
            return self._connection(context)
        except storage_base.StorageError as exc:
            raise GuestLogError(action, name, exc) from exc

    @staticmethod
    def _shown(log, conn):
        with _swift_failures('read the published state of', log.name):
            return log.show(conn)

    def list(self, context):
        conn = self._optional_connection(context)
        return [self._shown(log, conn) for log in
                sorted(self._exposed(context), key=lambda x: x.name)]

    def _get(self, context, name):
        log = self.logs.get(name)
        if log is None:
            raise exception.NotFound("No log named '%s' on this guest."
                                     % name)
        if log not in self._exposed(context):
            raise exception.BadRequest(
                "Log '%s' is not exposed: an administrator can list it in "
                "guest_log_exposed_logs." % name)
        return log

    def action(self, context, name, enable, disable, publish, discard):
        log = self._get(context, name)
        if enable or disable:
            raise exception.BadRequest(
                "Log '%s' is a system log: it is always on and can only be "
                "published or discarded." % name)
        if not (publish or discard):
            return self._shown(log, self._optional_connection(context))
        action = 'publish' if publish else 'discard'
        conn = self._required_connection(context, action, name)
        with _swift_failures(action, name):
            if discard:
                log.discard(conn)
            if publish:
                log.publish(conn)
            return log.show(conn)


@contextlib.contextmanager
def _swift_failures(action, name):
    """Swift's refusals and an unreachable endpoint as GuestLogError."""
    try:
        yield
    except swift_exc.ClientException as exc:
        raise GuestLogError(action, name, "Swift: %s" % exc) from exc
    except (requests.exceptions.RequestException, ConnectionError,
            TimeoutError) as exc:
        raise GuestLogError(
            action, name, "Swift cannot be reached: %s" % exc) from exc
