"""Guest logs against an in-memory stand-in of a swiftclient Connection
(the calls and the 404 ClientException of python-swiftclient)."""

import io
import json

import pytest
from swiftclient import exceptions as swift_exc

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
