"""Backups as Trove makes them: create_backup on A, prepare(backup_info) on B.

Real agents, each with its own server (the real CouchDB 3.5, and
pouchdb-server for the 1.6 API), a real single-node Swift; the control
plane's part is played through trove/guestagent/api.py and the conductor
listener.  pouchdb-server's LevelDB files are not append-only, so the tests
that run on both servers back up an idle server; the hot backups of real
append-only shard files under writes and compaction run on CouchDB 3.5
(test_backup_couchdb3.py).
"""

import os
import subprocess
import time
import uuid

import pytest

from integration.scenario import control_plane
from integration.services import base

KEY = 'integration-backup-key-0123456789'
SEGMENT = 8 * 1024
CONTAINER = control_plane.BACKUP_CONTAINER


_db = control_plane.database
_user = control_plane.user
_backup_info = control_plane.backup_info
_wait_backup = control_plane.wait_for_backup


@pytest.fixture
def swift_guest(guest_factory, swift):
    """Make guests whose backups go to the test Swift."""
    def make(name, key=KEY, **options):
        return control_plane.swift_guest(guest_factory, swift, name, key,
                                         SEGMENT,
                                         options={'DEFAULT': options})

    make.swift = swift
    return make


def _fill(guest, password, count=200, first=0):
    session = guest.session('alice', password)
    docs = [{'_id': 'doc-%04d' % i, 'n': i, 'text': 'x' * (i % 50)}
            for i in range(first, first + count)]
    answer = session.post(guest.url('shop', '_bulk_docs'),
                          json={'docs': docs}, timeout=30)
    assert answer.status_code == 201, answer.text


def _prepared_source(make):
    a = make('a')
    message = a.prepare_and_wait(
        databases=[_db('shop')],
        users=[_user('alice', 'alice-pw', ['shop']),
               _user('bob', 'bob-pw', ['shop'])],
        root_password='root-pw-a')
    assert message.kwargs['payload']['service_status'] == 'running'
    _fill(a, 'alice-pw')
    return a


def test_backup_then_restore_as_a_new_instance(swift_guest):
    a = _prepared_source(swift_guest)
    backup_id = str(uuid.uuid4())
    since = time.time()
    a.api.create_backup(_backup_info(a, backup_id))
    done = _wait_backup(a, backup_id)
    fields = done.kwargs
    assert fields['state'] == 'COMPLETED', fields
    assert fields['success'] is True
    assert fields['backup_type'] == 'CouchDBBackup'
    assert len(fields['checksum']) == 32
    assert fields['location'].endswith('%s/%s.tar.gz.enc' % (CONTAINER,
                                                             backup_id))
    states = [m.kwargs['state'] for m in a.conductor.select(
        'update_backup', a.id, since)]
    assert states == ['BUILDING', 'COMPLETED']

    conn = swift_guest.swift.connection()
    head = conn.head_object(CONTAINER, '%s.tar.gz.enc' % backup_id)
    assert head['x-static-large-object'].lower() == 'true'
    assert head['etag'].strip('"') == fields['checksum']
    assert head['x-object-meta-datastore'] == 'couchdb'

    b = swift_guest('b')
    message = b.prepare_and_wait(backup_info={
        'id': backup_id, 'instance_id': a.id, 'type': 'CouchDBBackup',
        'location': fields['location'], 'checksum': fields['checksum']})
    assert message.kwargs['payload']['service_status'] == 'running', (
        b.agent.log_text()[-4000:])
    for name, password in (('alice', 'alice-pw'), ('bob', 'bob-pw')):
        rows = b.session(name, password).get(
            b.url('shop', '_all_docs'), timeout=10).json()
        assert rows['total_rows'] == 200
    assert sorted(u['_name'] for u in b.api.list_users()[0]) == [
        'alice', 'bob']
    assert [d['_name'] for d in b.api.list_access('bob', '%')] == ['shop']
    assert b.api.is_root_enabled() is True
    assert b.session('root', 'root-pw-a').get(
        b.config_url('admins'), timeout=10).ok
    # B's own internal admin still works: the agent keeps managing it.
    b.api.create_database([_db('after-restore')])
    b.conductor.wait_for_status(b.id, 'running', timeout=20)

    # trove backup-delete: the taskmanager deletes the SLO with its
    # segments; nothing of the backup may remain.
    conn.delete_object(CONTAINER, '%s.tar.gz.enc' % backup_id,
                       query_string='multipart-manifest=delete')
    _, listing = conn.get_container(CONTAINER)
    assert not [o for o in listing if o['name'].startswith(backup_id)]


@pytest.mark.parametrize('kind', ['full', 'incremental'])
def test_restore_keeps_what_the_backup_holds_of_the_requested_data(
        swift_guest, kind):
    # trove create --backup X --databases shop,extra --users ...: Trove
    # passes the tenant's databases and users along with the backup, and
    # the backup holds some of them already.  X may be an incremental: the
    # request goes along with its whole chain.
    a = _prepared_source(swift_guest)
    security = a.admin_session().get(a.url('shop', '_security'),
                                     timeout=10).json()
    docs = 200
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))
    fields = _wait_backup(a, backup_id).kwargs
    assert fields['state'] == 'COMPLETED', fields
    if kind == 'incremental':
        _fill(a, 'alice-pw', first=docs, count=30)
        docs += 30
        parent, backup_id = fields, str(uuid.uuid4())
        a.api.create_backup(_backup_info(a, backup_id, parent=parent))
        fields = _wait_backup(a, backup_id).kwargs
        assert fields['state'] == 'COMPLETED', fields
        assert fields['backup_type'] == 'CouchDBBackupIncremental'

    b = swift_guest('b')
    message = b.prepare_and_wait(
        backup_info={'id': backup_id, 'instance_id': a.id,
                     'type': fields['backup_type'],
                     'location': fields['location'],
                     'checksum': fields['checksum']},
        databases=[_db('shop'), _db('extra')],
        users=[_user('alice', 'alice-new-pw', ['shop']),
               _user('carol', 'carol-pw', ['extra'])])
    assert message.kwargs['payload']['service_status'] == 'running', (
        b.agent.log_text()[-4000:])
    # The databases: shop kept with its documents, extra created.
    assert sorted(d['_name'] for d in b.api.list_databases()[0]) == [
        'extra', 'shop']
    assert b.session('alice', 'alice-new-pw').get(
        b.url('shop', '_all_docs'), timeout=10).json()['total_rows'] == docs
    # The users: alice kept with the password asked for, bob as he was,
    # carol new; shop's _security as the backup had it.
    assert b.session('alice', 'alice-pw').get(
        b.url('shop'), timeout=10).status_code == 401
    assert b.session('bob', 'bob-pw').get(b.url('shop'), timeout=10).ok
    assert b.session('carol', 'carol-pw').get(b.url('extra'),
                                              timeout=10).ok
    assert sorted(u['_name'] for u in b.api.list_users()[0]) == [
        'alice', 'bob', 'carol']
    assert b.admin_session().get(b.url('shop', '_security'),
                                 timeout=10).json() == security
    # Root as it was on A; B's own internal admin manages B.
    assert b.api.is_root_enabled() is True
    assert b.session('root', 'root-pw-a').get(
        b.config_url('admins'), timeout=10).ok
    assert b.admin_credentials() != a.admin_credentials()
    b.api.create_database([_db('after-restore')])
    b.conductor.wait_for_status(b.id, 'running', timeout=20)


def test_root_disabled_comes_back_disabled(swift_guest):
    a = swift_guest('a')
    a.prepare_and_wait(databases=[_db('only')])
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))
    fields = _wait_backup(a, backup_id).kwargs
    assert fields['state'] == 'COMPLETED', fields
    b = swift_guest('b')
    b.prepare_and_wait(backup_info={
        'id': backup_id, 'instance_id': a.id, 'type': 'CouchDBBackup',
        'location': fields['location'], 'checksum': fields['checksum']})
    assert b.api.is_root_enabled() is False
    assert [d['_name'] for d in b.api.list_databases()[0]] == ['only']


def test_a_backup_restores_after_the_key_is_rotated(swift_guest):
    a = swift_guest('a', key='the key of last year')
    a.prepare_and_wait(databases=[_db('kept')])
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))
    fields = _wait_backup(a, backup_id).kwargs
    assert fields['state'] == 'COMPLETED', fields
    backup_info = {'id': backup_id, 'instance_id': a.id,
                   'type': 'CouchDBBackup', 'location': fields['location'],
                   'checksum': fields['checksum']}

    # The operator rotated the key: the old one is not configured.
    b = swift_guest('b', key='the key of this year')
    message = b.prepare_and_wait(backup_info=backup_info)
    assert message.kwargs['payload']['service_status'] == 'failed to spawn'
    # The status goes out before the failure is logged.
    control_plane.wait_until(
        lambda: 'chunk 0 failed authentication: wrong key'
        in b.agent.log_text(), 10, 'the reason in the agent log')
    # ... and listed as a previous key: the backup restores.
    c = swift_guest('c', key='the key of this year',
                    backup_aes_cbc_previous_keys='the key of last year')
    message = c.prepare_and_wait(backup_info=backup_info)
    assert message.kwargs['payload']['service_status'] == 'running', (
        c.agent.log_text()[-3000:])
    assert [d['_name'] for d in c.api.list_databases()[0]] == ['kept']
    assert 'the key of last year' not in c.agent.log_text()


@pytest.mark.parametrize('digest', ['md5', 'sha256'])
def test_upstream_trove_backup_restores(swift_guest, tmp_path, digest):
    a = _prepared_source(swift_guest)
    a.api.stop_db()
    obj = tmp_path / 'legacy.gz.enc'
    _legacy_pipeline(a.couchdb.data_dir, obj, KEY, digest)
    conn = swift_guest.swift.connection()
    conn.put_container(CONTAINER)
    name = '%s.gz.enc' % uuid.uuid4()
    with open(obj, 'rb') as body:
        etag = conn.put_object(CONTAINER, name, body)
    b = swift_guest('b')
    message = b.prepare_and_wait(backup_info={
        'id': 'legacy', 'instance_id': a.id, 'type': 'CouchDBBackup',
        'location': '%s/%s/%s' % (conn.url, CONTAINER, name),
        'checksum': etag})
    assert message.kwargs['payload']['service_status'] == 'running', (
        b.agent.log_text()[-4000:])
    rows = b.session('alice', 'alice-pw').get(
        b.url('shop', '_all_docs'), timeout=10).json()
    assert rows['total_rows'] == 200


def _legacy_pipeline(data_dir, out, key, digest):
    """Upstream's `tar cpPf - /var/lib/couchdb | gzip | openssl enc`.

    The data lives elsewhere here, so tar renames it to /var/lib/couchdb;
    the passphrase goes to openssl through a pipe, not its argv.
    """
    read_fd, write_fd = os.pipe()
    os.write(write_fd, key.encode() + b'\n')
    os.close(write_fd)
    with open(out, 'wb') as sink:
        tar = subprocess.Popen(
            ['tar', 'cpPf', '-', '--transform',
             's,^%s,/var/lib/couchdb,' % data_dir,
             str(data_dir)], stdout=subprocess.PIPE)
        gzip = subprocess.Popen(['gzip'], stdin=tar.stdout,
                                stdout=subprocess.PIPE)
        openssl = subprocess.Popen(
            ['openssl', 'enc', '-aes-256-cbc', '-salt', '-md', digest,
             '-pass', 'fd:%d' % read_fd], stdin=gzip.stdout, stdout=sink,
            pass_fds=(read_fd,))
        tar.stdout.close()
        gzip.stdout.close()
        codes = [p.wait(timeout=base.scaled(120))
                 for p in (tar, gzip, openssl)]
    os.close(read_fd)
    assert codes == [0, 0, 0]
