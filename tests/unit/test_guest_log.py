"""Guest logs against an in-memory stand-in of a swiftclient Connection
(the calls and the 404 ClientException of python-swiftclient)."""

import io
import json

from oslo_config import cfg
from oslo_log import log as logging
import pytest
import requests
from swiftclient import exceptions as swift_exc

from trove.common import context as trove_context
from trove.guestagent.datastore.experimental.couchdb import manager as \
    couchdb_manager
from trove.guestagent import guest_log


class MemorySwift:
    def __init__(self):
        self.objects = {}
        self.containers = set()

    def _missing(self):
        return swift_exc.ClientException('not found', http_status=404)

    def head_container(self, container):
        if container not in self.containers:
            raise self._missing()

    def put_container(self, container, headers=None):
        self.containers.add(container)

    def put_object(self, container, name, contents, headers=None):
        if container not in self.containers:
            raise self._missing()
        data = contents.encode() if isinstance(contents, str) else contents
        self.objects[(container, name)] = (data, dict(headers or {}))

    def get_object(self, container, name):
        if (container, name) not in self.objects:
            raise self._missing()
        return {}, self.objects[(container, name)][0]

    def get_container(self, container, prefix='', full_listing=False):
        if container not in self.containers:
            raise self._missing()
        return {}, [{'name': n} for c, n in sorted(self.objects)
                    if c == container and n.startswith(prefix)]

    def delete_object(self, container, name):
        if self.objects.pop((container, name), None) is None:
            raise self._missing()


@pytest.fixture
def log(conf, tmp_path):
    conf.config(datastore_manager='couchdb', guest_log_limit=1024)
    path = tmp_path / 'couch.log'
    path.write_bytes(b''.join(b'line %04d of the server log\n' % i
                              for i in range(100)))
    return guest_log.GuestLog('couchdb', str(path))


def _published(swift, log):
    names = sorted(n for c, n in swift.objects
                   if n.startswith(log.prefix))
    return b''.join(swift.objects[('database_logs', n)][0] for n in names)


def test_pieces_are_whole_lines_under_the_limit():
    stream = io.BytesIO(b'a' * 10 + b'\n' + b'b' * 30 + b'\n' + b'c\n')
    assert list(guest_log._pieces(stream, 20)) == [
        (b'a' * 10 + b'\n', 1), (b'b' * 30 + b'\n', 1), (b'c\n', 1)]


def test_publish_sends_new_lines_only_and_layout_is_troves(log):
    swift = MemorySwift()
    assert log.show(swift)['status'] == 'Ready'
    log.publish(swift)
    path = log.path
    with open(path, 'rb') as f:
        whole = f.read()
    assert _published(swift, log) == whole
    assert log.prefix == 'g-1/couchdb-couchdb/'
    meta = json.loads(swift.objects[('database_logs', log.metafile)][0])
    assert meta['log_size'] == len(whole) and meta['log_type'] == 'SYS'
    for (_c, name), (data, headers) in swift.objects.items():
        assert headers['X-Delete-After'] == '604800'
        assert len(data) <= 1024 or name == log.metafile
    assert log.show(swift)['status'] == 'Published'
    with open(path, 'ab') as f:
        f.write(b'one more line\n')
    assert log.show(swift)['pending'] == len(b'one more line\n')
    log.publish(swift)
    assert _published(swift, log) == whole + b'one more line\n'


def test_a_rotated_file_is_published_afresh(log):
    swift = MemorySwift()
    log.publish(swift)
    with open(log.path, 'wb') as f:
        f.write(b'a new file after rotation\n')
    assert log.show(swift)['status'] == 'Rotated'
    log.publish(swift)
    assert _published(swift, log) == b'a new file after rotation\n'


def test_discard_removes_every_object(log):
    swift = MemorySwift()
    log.publish(swift)
    log.discard(swift)
    assert swift.objects == {}
    assert log.show(swift)['published'] == 0


# -- through the manager: only publish and discard need Swift -------------

SERVER_LOG = b'[info] CouchDB has started\n' * 3
AGENT_LOG = b'INFO trove.cmd.guest Starting\n'


@pytest.fixture
def manager(conf, tmp_path):
    logging.register_options(cfg.CONF)      # log_file: the agent's own log
    (tmp_path / 'couch.log').write_bytes(SERVER_LOG)
    (tmp_path / 'agent.log').write_bytes(AGENT_LOG)
    conf.config(datastore_manager='couchdb',
                log_file=str(tmp_path / 'agent.log'))
    conf.config(group='couchdb', guest_log_exposed_logs='couchdb,guest',
                server_log_file=str(tmp_path / 'couch.log'))
    return couchdb_manager.Manager()


def _context(catalog=None):
    return trove_context.TroveContext(auth_token='t', project_id='p1',
                                      service_catalog=catalog)


def _swift_is(monkeypatch, swift):
    monkeypatch.setattr(guest_log.swift_client, 'Connection',
                        lambda **_options: swift)


def test_logs_are_listed_without_any_swift_endpoint(manager):
    listed = manager.guest_log_list(_context())
    assert [(log['name'], log['status'], log['published'], log['pending'],
             log['container']) for log in listed] == [
        ('couchdb', 'Ready', 0, len(SERVER_LOG), 'None'),
        ('guest', 'Ready', 0, len(AGENT_LOG), 'None')]


def test_a_log_is_shown_without_any_swift_endpoint(manager):
    shown = manager.guest_log_action(_context(), 'guest')
    assert shown['status'] == 'Ready' and shown['pending'] == len(AGENT_LOG)


@pytest.mark.parametrize('action', ['publish', 'discard'])
def test_publish_and_discard_say_swift_is_not_configured(manager, action):
    with pytest.raises(guest_log.GuestLogError,
                       match="Could not %s guest log 'couchdb': No Swift "
                             "endpoint: set \\[DEFAULT\\] swift_url"
                       % action):
        manager.guest_log_action(_context(), 'couchdb', **{action: True})


class UnreachableSwift(MemorySwift):
    def _refused(self, *_args, **_kwargs):
        raise requests.exceptions.ConnectionError(
            "HTTPConnectionPool(host='swift.test', port=8080): connection "
            "refused")

    head_container = put_container = put_object = _refused
    get_object = get_container = delete_object = _refused


@pytest.mark.parametrize('action', ['publish', 'discard'])
def test_publish_and_discard_say_swift_cannot_be_reached(
        manager, conf, monkeypatch, action):
    conf.config(swift_url='http://swift.test:8080/v1/AUTH_')
    _swift_is(monkeypatch, UnreachableSwift())
    with pytest.raises(guest_log.GuestLogError,
                       match="Could not %s guest log 'couchdb': Swift "
                             "cannot be reached: .*connection refused"
                       % action):
        manager.guest_log_action(_context(), 'couchdb', **{action: True})


def test_list_shows_what_is_published_when_swift_is_configured(
        manager, monkeypatch):
    swift = MemorySwift()
    _swift_is(monkeypatch, swift)
    catalog = [{'type': 'object-store', 'endpoints': [
        {'region': 'RegionOne', 'interface': 'public',
         'url': 'http://swift.test:8080/v1/AUTH_p1'}]}]
    published = manager.guest_log_action(_context(catalog), 'couchdb',
                                         publish=True)
    assert published['status'] == 'Published'
    listed = {log['name']: log
              for log in manager.guest_log_list(_context(catalog))}
    assert listed['couchdb']['published'] == len(SERVER_LOG)
    assert listed['couchdb']['container'] == 'database_logs'
    assert listed['guest']['status'] == 'Ready'
    prefix = listed['couchdb']['prefix']
    names = sorted(n for _c, n in swift.objects if n.startswith(prefix))
    assert b''.join(swift.objects[('database_logs', n)][0]
                    for n in names) == SERVER_LOG
