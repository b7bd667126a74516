"""Incremental backups that go wrong, driven as Trove drives the agent.

An incremental backup depends on every backup under it, so its faults are
those of a chain: Swift going away while one is stored, a parent deleted,
damaged, replaced by another backup or made by upstream Trove, a delta
that extends other bytes than the file its parent restored.  Each ends
as test_backup_faults.py's faults do: a FAILED update whose note says
what to do, or a restore that fails to spawn the instance with its data
dir as it was; a link that cannot be used is found while reading the
chain, before CouchDB is stopped.

The restore faults damage (or copy and damage) one chain, made once for
the module by test_backup_faults' source guest: full -> first -> second.
A test that changes an object of that chain puts it back.  Like
test_backup_faults.py's, these faults do not depend on the server under
the agent: they run on a real CouchDB 3.5 node alone.
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
import types
import uuid

import pytest

from integration.scenario import control_plane
from integration import test_backup
from integration import test_backup_couchdb3 as hot
from integration import test_backup_faults as faults
from integration import test_backup_incremental as incremental
from integration.services import servers
from integration.test_guest_agent import NOTIFICATION
from trove.guestagent.backup import archive
from trove.guestagent.backup import digest
from trove.guestagent.backup import encryption
from trove.guestagent.backup import increments

pytestmark = servers.only_on('couchdb3')

swift_guest = test_backup.swift_guest
source = faults.source
backup = incremental.backup
restore_info = incremental.restore_info
CONTAINER = test_backup.CONTAINER
KEY = test_backup.KEY
INDEX = '_index'
MiB = faults.MiB
INCREMENTAL = 'CouchDBBackupIncremental'
# A file of B's data dir before its restore: a failed restore keeps it.
B_OWN = 'b-own.txt'


# --- the chain every restore fault uses ----------------------------------

@pytest.fixture(scope='module')
def chain(source, swift):
    """The source guest's full backup and two incrementals on it, each
    with a marker file of its own, and a later full backup."""
    a = source.guest
    full = dict(source.fields, id=source.fields['backup_id'])
    alice = a.session('alice', 'alice-pw')
    names = list(source.only_in_a)
    links = [full]
    for _ in range(2):
        hot._load(alice, a.url('shop'), 1000 * len(links), 50)
        marker = 'a-link-%s.txt' % uuid.uuid4()
        (a.couchdb.data_dir / marker).write_text('only in a later link')
        names.append(marker)
        links.append(backup(a, parent=links[-1]))
    return types.SimpleNamespace(guest=a, full=full, first=links[1],
                                 second=links[2], other=backup(a),
                                 names=names)


# --- Swift -------------------------------------------------------------------

def _name(fields):
    return fields['location'].rsplit('/', 1)[1]


def _get(conn, name):
    return conn.get_object(CONTAINER, name)[1]


def _manifest(conn, name):
    """An SLO's segments as Swift lists them (name, hash, bytes)."""
    return json.loads(conn.get_object(
        CONTAINER, name, query_string='multipart-manifest=get')[1])


def _meta(conn, name):
    return {key: value for key, value in
            conn.head_object(CONTAINER, name).items()
            if key.startswith('x-object-meta-')}


def _entry(path, etag, size):
    return {'path': path, 'etag': etag, 'size_bytes': size}


def _listed(segment):
    """A segment of ``_manifest`` as a manifest to put names it."""
    return _entry(segment['name'], segment['hash'], segment['bytes'])


def _put_segment(conn, name, data):
    etag = conn.put_object(CONTAINER, name, data)
    return _entry('/%s/%s' % (CONTAINER, name), etag, len(data))


def _put_manifest(conn, name, entries, headers):
    """The SLO ``name`` of ``entries``: its location and checksum."""
    conn.put_object(CONTAINER, name, json.dumps(entries), headers=headers,
                    query_string='multipart-manifest=put')
    etag = conn.head_object(CONTAINER, name)['etag'].strip('"')
    return '%s/%s/%s' % (conn.url, CONTAINER, name), etag


def _put_backup(conn, name, pieces, index, headers):
    """A backup laid out as the agent stores one: data segments, then
    ``index`` (None: none) as ``<name>_index``."""
    entries = [_put_segment(conn, '%s_%08d' % (name, number), piece)
               for number, piece in enumerate(pieces)]
    if index is not None:
        entries.append(_put_segment(conn, name + INDEX, index))
    return _put_manifest(conn, name, entries, headers)


def _data_segments(conn, fields):
    """The bytes of a backup's data segments, in order."""
    return [_get(conn, s['name'].rsplit('/', 1)[1])
            for s in _manifest(conn, _name(fields))[:-1]]


def _flipped(data):
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


@contextlib.contextmanager
def _put_back(conn, fields):
    """Whatever the block does to the object of ``fields`` (its manifest,
    its index segment, its metadata), it is as it was afterwards."""
    name = _name(fields)
    manifest = _manifest(conn, name)
    index = _get(conn, name + INDEX)
    meta = _meta(conn, name)
    try:
        yield
    finally:
        conn.put_object(CONTAINER, name + INDEX, index)
        _location, checksum = _put_manifest(
            conn, name, [_listed(s) for s in manifest], meta)
        assert checksum == fields['checksum']


# --- the agent ---------------------------------------------------------------

def _refused(swift_guest, tmp_path, chain, fields, errors, early,
             names=(), key=KEY, **options):
    """B restores the backup ``fields`` and fails to spawn; the failure
    the conductor is told of names one of ``errors``; B's data dir holds
    what it held and nothing of the chain.  ``early``: refused before
    CouchDB is stopped.  Returns the agent's log of the restore."""
    b = swift_guest('b', key=key, **options)
    # The taskmanager's prepare carries a notification: a failure goes
    # back to the conductor with its message.
    b.api = b.api.__class__(b.context(NOTIFICATION), b.id, key=b.agent.key)
    own = b.couchdb.data_dir / B_OWN
    own.write_text('B had this before the restore')
    before = faults._files_outside(tmp_path, [b.couchdb.data_dir])
    faults._failed_to_spawn(b, backup_info=restore_info(chain.guest,
                                                        fields))
    message = b.conductor.wait_for('notify_exc_info',
                                   b.id).kwargs['message']
    assert [e for e in errors if e in message], (errors, message)
    log = faults._wait_log(b, 'prepare failed')
    log = log[log.index('Restoring backup %s' % fields['id']):]
    assert ('Stopping CouchDB' not in log) is early, log[-4000:]
    assert own.read_text() == 'B had this before the restore'
    faults._assert_restore_left_nothing(b, list(chain.names) + list(names))
    assert not list(b.couchdb.data_dir.rglob('shop*'))
    assert faults._written_outside(tmp_path, before,
                                   [b.couchdb.data_dir]) == []
    faults._assert_serves(b, couchdb_up=early)
    assert [d['_name'] for d in b.api.list_databases()[0]] == []
    for text in (message, log):
        assert KEY not in text and faults.OTHER_KEY not in text
    return message


def _incremental_fails(a, conn, location, checksum):
    """create_backup on the parent at ``location``: FAILED, nothing left
    in Swift, A serving.  Returns the note."""
    backup_id = str(uuid.uuid4())
    a.api.create_backup(control_plane.backup_info(
        a, backup_id, parent={'location': location, 'checksum': checksum}))
    note = faults._failed_backup(a, backup_id)
    assert faults._segments(conn, backup_id) == []
    faults._assert_no_backup_marker(a)
    faults._assert_serves(a)
    return note


# --- Swift going away while an incremental is stored -------------------------

def test_swift_stopping_mid_upload_of_an_incremental(swift_guest, tmp_path):
    swift = swift_guest.swift
    a = swift_guest('a', backup_segment_max_size=str(faults.SLOW_SEGMENT))
    a.prepare_and_wait(databases=[test_backup._db('shop')])
    faults._ballast(a, MiB)
    full = backup(a)
    # The ballast grows: the incremental stores 31 MiB of a delta.
    with open(a.couchdb.data_dir / 'ballast.bin', 'ab') as out:
        for _ in range(31):
            out.write(os.urandom(MiB))
    before = faults._files_outside(tmp_path, [a.couchdb.data_dir])
    faults.swift_stops_during(
        swift, a, control_plane.backup_info(a, str(uuid.uuid4()),
                                            parent=full),
        tmp_path, before)
    conn = swift.connection()
    # Swift is back: an incremental on the same parent completes.
    again = backup(a, parent=full)
    assert again['backup_type'] == INCREMENTAL
    assert 'incremental on %s' % full['id'] in again['note']
    assert int(re.search(r'(\d+) appended to', again['note']).group(1)) >= 1
    assert incremental.object_head(swift, again)[
        'x-object-meta-parent-location'] == full['location']
    for fields in (again, full):
        control_plane.delete_backup(conn, fields['location'])


# --- restores refused --------------------------------------------------------

def test_wrong_key_is_refused_before_couchdb_stops(
        swift_guest, tmp_path, chain):
    _refused(swift_guest, tmp_path, chain, chain.second,
             ['chunk 0 failed authentication'], early=True,
             key=faults.OTHER_KEY)


@pytest.mark.parametrize('checksum', ['recomputed', 'original'])
def test_flipped_byte_in_a_delta_is_refused(
        swift_guest, tmp_path, chain, checksum):
    # A copy of the first incremental, one byte of a data segment flipped.
    # Recomputed: the segment is uploaded damaged and the manifest made
    # on it, so every checksum matches and only the authentication of the
    # encrypted stream can catch it.  Original: the segment is damaged
    # after the manifest was made, the checksum the restore is given is
    # the first incremental's own.
    conn = swift_guest.swift.connection()
    pieces = _data_segments(conn, chain.first)
    middle = len(pieces) // 2
    name = 'copy-%s.tar.gz.enc' % uuid.uuid4()
    meta = _meta(conn, _name(chain.first))
    index = _get(conn, _name(chain.first) + INDEX)
    if checksum == 'recomputed':
        pieces[middle] = _flipped(pieces[middle])
        location, given = _put_backup(conn, name, pieces, index, meta)
        assert given != chain.first['checksum']
        errors = ['Cannot decrypt the backup']
    else:
        location, given = _put_backup(conn, name, pieces, index, meta)
        conn.put_object(CONTAINER, '%s_%08d' % (name, middle),
                        _flipped(pieces[middle]))
        assert given == chain.first['checksum']
        errors = ['received bytes have checksum',
                  'Cannot decrypt the backup']
    fields = dict(chain.first, location=location, checksum=given)
    _refused(swift_guest, tmp_path, chain, fields, errors, early=False)


@pytest.mark.parametrize('case', ['overwritten', 'repointed', 'unverified'])
def test_a_parent_replaced_by_another_backup_is_refused(
        swift_guest, tmp_path, chain, case):
    # The full backup's object now holds another full backup (data
    # segments, index and all): an operator copying the wrong object
    # back, or an attacker.  Repointed: the first incremental's metadata
    # names the new checksum too.  Unverified: the operator turned off
    # verify_swift_checksum_on_restore; the chain of backup ids still
    # tells the other backup from the parent.
    conn = swift_guest.swift.connection()
    full, other = _name(chain.full), _name(chain.other)
    errors = {'overwritten': ['(which backup %s builds on) is damaged'
                              % chain.first['location']],
              'repointed': ['Backup %s is not consistent'
                            % chain.first['location']],
              'unverified': ['a foreign link']}[case]
    options = ({'verify_swift_checksum_on_restore': 'False'}
               if case == 'unverified' else {})
    with _put_back(conn, chain.full), _put_back(conn, chain.first):
        index = _put_segment(conn, full + INDEX, _get(conn, other + INDEX))
        entries = [_listed(s) for s in _manifest(conn, other)[:-1]]
        _location, checksum = _put_manifest(conn, full, entries + [index],
                                            _meta(conn, full))
        if case == 'repointed':
            meta = _meta(conn, _name(chain.first))
            meta['x-object-meta-parent-checksum'] = checksum
            conn.post_object(CONTAINER, _name(chain.first), headers=meta)
        _refused(swift_guest, tmp_path, chain, chain.first, errors,
                 early=True, **options)
        if case == 'overwritten':
            # Nor does an incremental build on it.
            note = _incremental_fails(chain.guest, conn,
                                      chain.full['location'],
                                      chain.full['checksum'])
            assert 'ParentBackupError' in note and full in note, note
            assert 'is damaged or is not the backup Trove recorded' in note


def _tar(members):
    """A tar of (name, bytes, pax records)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for name, data, pax in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, time.time()
            info.pax_headers = pax
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _digest(data):
    found = digest.Digest()
    found.update(data)
    return found.hexdigest()


def _sealed_index(backup_id, files, parent=None):
    """An index as a backup seals it: JSON, gzip, encrypted with KEY."""
    index = {'format': increments.FORMAT, 'backup_id': backup_id,
             'created': time.time(), 'parent': parent,
             'chain': ([parent['backup_id']] if parent else []) + [
                 backup_id],
             'block': digest.BLOCK, 'dirs': [], 'deleted': [],
             'files': {rel: {'size': len(data), 'sha256': _digest(data),
                             'ino': 1, 'stored': stored}
                       for rel, (data, stored) in files.items()}}
    return b''.join(encryption.encrypt(
        [gzip.compress(json.dumps(index).encode())], KEY))


def test_a_delta_on_other_bytes_is_refused(swift_guest, tmp_path, chain):
    # A chain whose links agree (backup ids, checksums, metadata) but
    # whose delta extends other bytes than its full backup holds: what a
    # tool sealing backups with the operator's key could make by mistake.
    # Only the base each delta names, checked against the file restored,
    # stops it.
    conn = swift_guest.swift.connection()
    rel = 'fault-%s.couch' % uuid.uuid4()
    held, other, tail = b'A' * 4096, b'B' * 4096, b'C' * 512
    full_id, child_id = str(uuid.uuid4()), str(uuid.uuid4())
    full_location, full_checksum = _put_backup(
        conn, '%s.tar.gz.enc' % full_id,
        [faults._as_backup(_tar([('data/' + rel, held, {})]))],
        _sealed_index(full_id, {rel: (held, 'whole')}), {})
    delta = {archive.BASE_SIZE: str(len(other)),
             archive.BASE_SHA256: _digest(other)}
    location, checksum = _put_backup(
        conn, '%s.tar.gz.enc' % child_id,
        [faults._as_backup(_tar([('delta/' + rel, tail, delta)]))],
        _sealed_index(child_id, {rel: (other + tail, 'delta')}, parent={
            'backup_id': full_id, 'location': full_location,
            'checksum': full_checksum}),
        {'X-Object-Meta-parent-location': full_location,
         'X-Object-Meta-parent-checksum': full_checksum})
    fields = {'id': child_id, 'backup_type': INCREMENTAL,
              'location': location, 'checksum': checksum}
    _refused(swift_guest, tmp_path, chain, fields,
             ["The delta of 'delta/%s' does not apply to the file the "
              "earlier backups restored" % rel], early=False, names=[rel])


def test_a_deleted_parent_is_named(swift_guest, tmp_path, chain):
    # `trove backup-delete` of a parent alone (or its object deleted in
    # Swift): its children cannot be restored, nor built on it.
    a, conn = chain.guest, swift_guest.swift.connection()
    parent = backup(a)
    child = backup(a, parent=parent)
    control_plane.delete_backup(conn, parent['location'])
    assert faults._segments(conn, parent['id']) == []

    _refused(swift_guest, tmp_path, chain, child,
             ['builds on backup %s, which is gone' % parent['location']],
             early=True)
    note = _incremental_fails(a, conn, parent['location'],
                              parent['checksum'])
    assert 'parent' in note and 'gone' in note, note
    assert _name(parent) in note, note
    control_plane.delete_backup(conn, child['location'])


@pytest.mark.parametrize('parent', ['upstream', 'indexless'])
def test_an_incremental_on_a_backup_without_an_index_fails(
        swift_guest, tmp_path, chain, parent):
    # Upstream Trove's backups are one plain object (tar | gzip | openssl
    # enc); an SLO without an _index segment is what an agent before file
    # indexes stored.  Neither says what its files were.
    conn = swift_guest.swift.connection()
    if parent == 'upstream':
        data = tmp_path / 'upstream-data'
        data.mkdir()
        (data / 'shop.couch').write_bytes(os.urandom(4096))
        out = tmp_path / 'upstream.gz.enc'
        test_backup._legacy_pipeline(data, out, KEY, 'sha256')
        location, checksum = faults._upload(swift_guest.swift,
                                            out.read_bytes())
    else:
        location, checksum = _put_backup(
            conn, 'indexless-%s.tar.gz.enc' % uuid.uuid4(),
            [faults._as_backup(_tar([('data/x.couch', b'x', {})]))],
            None, {})
    note = _incremental_fails(chain.guest, conn, location, checksum)
    assert 'ParentBackupError' in note and 'has no file index' in note, note
    assert 'make a full backup first' in note, note


def test_an_incremental_on_a_parent_without_its_checksum_fails(
        swift_guest, chain):
    # Without the checksum Trove recorded, the parent could not be proven
    # to be the backup Trove means, nor the chain later.
    conn = swift_guest.swift.connection()
    note = _incremental_fails(chain.guest, conn, chain.full['location'],
                              None)
    assert 'ParentBackupError' in note and 'checksum' in note, note


@pytest.mark.parametrize('damage', ['replaced', 'deleted'])
def test_a_damaged_link_in_the_middle_is_refused_before_couchdb_stops(
        swift_guest, tmp_path, chain, damage):
    # The first incremental's index segment is replaced by another
    # backup's (authentic, sealed with the key) or gone: restoring the
    # second finds it while reading the chain.
    conn = swift_guest.swift.connection()
    index = _name(chain.first) + INDEX
    with _put_back(conn, chain.first):
        if damage == 'replaced':
            conn.put_object(CONTAINER, index,
                            _get(conn, _name(chain.full) + INDEX))
        else:
            conn.delete_object(CONTAINER, index)
        _refused(swift_guest, tmp_path, chain, chain.second,
                 ['Backup %s (which backup %s builds on) is damaged' % (
                     chain.first['location'], chain.second['location'])],
                 early=True)
    assert hashlib.md5(_get(conn, index)).hexdigest() == _manifest(
        conn, _name(chain.first))[-1]['hash']
