"""The control plane's side of Trove's flows, call for call.

Each function makes the guest calls Trove 26's taskmanager makes for one
user-facing action (``trove/taskmanager/{manager,models}.py`` and
``trove/instance/models.py``), in the same order, through
``trove/guestagent/api.py``.  The scenario runners and the replication
tests share them, so both follow the same, single reading of Trove.
"""

import time
import uuid

import swiftclient

from integration.services import base

BACKUP_CONTAINER = 'database_backups'


def database(name):
    """A database as Trove's API serialises it for the guest."""
    return {'_name': name, '_collate': None, '_character_set': None}


def user(name, password, databases=()):
    """A user as Trove's API serialises it for the guest."""
    return {'_name': name, '_password': password, '_host': '%',
            '_databases': [database(d) for d in databases]}


def wait_until(predicate, timeout, what, interval=0.1):
    """Poll ``predicate`` until it returns a true value, and return it.

    Casts run on the guest after the call returns, as in Trove, so an
    outcome is waited for, never assumed.  ``timeout`` is scaled by
    TEST_TIMEOUT_FACTOR.
    """
    deadline = time.monotonic() + base.scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('%s: not within %s s' % (what, timeout))
        time.sleep(interval)


# Replication: create-replica, attach, promote, eject.

def create_replica(source, replicas, swift_connection, timeout=120,
                   after_snapshot=None):
    """``trove create --replica-of`` (``--replica-count N``), as Trove 26's
    taskmanager runs it (``_create_replication_slave``).

    The source is asked whether it needs a backup (it must: Trove deletes
    the replication snapshot at the end, and with none it deletes with
    ``None``); Trove records a backup for the replica, on the source's
    last backup as parent if it has one; the source's snapshot makes it;
    each replica is prepared with that backup and the snapshot; at the
    end Trove deletes the snapshot's backup, whatever happened.  Returns
    each replica's prepare heartbeat.  ``after_snapshot(snapshot)`` runs
    between the snapshot and the prepares (what the tenant does meanwhile).
    """
    if not isinstance(replicas, (list, tuple)):
        replicas = [replicas]
    if source.api.backup_required_for_replication() is not True:
        raise AssertionError('%s answers that it needs no backup for '
                             'replication: Trove 26 would delete every '
                             'full backup of the tenant' % source.id)
    backup_id = str(uuid.uuid4())
    info = backup_info(source, backup_id,
                       name='Replication snapshot for %s' % replicas[0].id,
                       parent=last_backup(source, swift_connection))
    info.update(replica_number=1, storage_driver='swift', backup_info={})
    completed = None
    try:
        snapshot = source.api.get_replication_snapshot(
            snapshot_info=info, replica_source_config=None)
        snapshot['config'] = ''
        completed = wait_for_backup(source, backup_id).kwargs
        if completed['state'] != 'COMPLETED':
            raise AssertionError('the replication snapshot failed: %s'
                                 % completed.get('note'))
        restore = {'id': backup_id, 'instance_id': source.id,
                   'location': completed['location'],
                   'type': completed['backup_type'],
                   'checksum': completed['checksum'],
                   'storage_driver': 'swift'}
        if after_snapshot:
            after_snapshot(snapshot)
        return [replica.prepare_and_wait(backup_info=restore,
                                         snapshot=snapshot, timeout=timeout)
                for replica in replicas]
    finally:
        if completed and completed.get('location'):
            delete_backup(swift_connection, completed['location'])


def last_backup(instance, swift_connection):
    """The parent Trove gives a replication snapshot: the instance's last
    completed backup not deleted since (``Backup.get_last_completed``),
    or None."""
    done = [m.kwargs for m in instance.conductor.select(
        'update_backup', instance.id)
        if m.kwargs.get('state') == 'COMPLETED']
    for backup in reversed(done):
        container, _, name = backup['location'].rstrip('/').rpartition('/')
        try:
            swift_connection.head_object(container.rpartition('/')[2], name)
        except swiftclient.ClientException as exc:
            if exc.http_status != 404:
                raise
            continue
        return backup
    return None


def attach(replica, source, restart=False):
    """Trove's Instance.attach_replica: follow ``source``."""
    replica.api.attach_replica(source.api.get_replica_context(), '',
                               restart=restart)


def detach(replica, source):
    """``trove detach-replica``: the replica leaves, the source cleans up."""
    info = replica.api.detach_replica(for_failover=False)
    source.api.cleanup_source_on_replica_detach(info)
    return info


def promote(candidate, old_source, replicas):
    """``trove promote-to-replica-source``, Trove 26's guest calls in order.

    ``replicas`` are all the replicas of ``old_source``, ``candidate``
    among them.
    """
    old_source.api.make_read_only(True)
    txn = old_source.api.get_latest_txn_id()
    candidate.api.wait_for_txn(txn)
    take_over(candidate, replicas, restart=True)
    attach(old_source, candidate)
    old_source.api.demote_replication_master()


def take_over(candidate, replicas, restart=False):
    """The candidate becomes the source; the other replicas follow it."""
    candidate.api.detach_replica(for_failover=True)
    candidate.api.enable_as_master(None)
    candidate.api.make_read_only(False)
    for replica in replicas:
        if replica is not candidate:
            replica.api.detach_replica(for_failover=True)
            attach(replica, candidate, restart=restart)


def eject(dead_source_id, replicas):
    """``trove eject-replica-source``: the most current replica wins.

    Trove asks every replica for its last transaction; they must all name
    the same (dead) source, and the highest transaction takes over, ties
    going to the first replica as in Trove's sort.  Returns the new source.
    """
    last = [[r] + r.api.get_last_txn() for r in replicas]
    sources = {source for _r, source, _txn in last}
    if sources != {dead_source_id}:
        raise AssertionError('the replicas name sources %s, not %s' % (
            sorted(map(str, sources)), dead_source_id))
    candidate = sorted(last, key=lambda x: x[2], reverse=True)[0][0]
    take_over(candidate, replicas)
    return candidate


# Backups.

def swift_guest(guest_factory, swift, name, backup_key, segment_size,
                options=None, **kwargs):
    """A guest whose backups go to ``swift``, as an operator configures
    one: Trove's swift_url convention (``<endpoint>/v1/AUTH_`` + project),
    the cloud's backup key, the owner's token and project in the context."""
    token, storage_url = swift.token_and_storage_url()
    project = swift.account[len('AUTH_'):]
    conf = {'DEFAULT': {'swift_url': storage_url[:-len(project)],
                        'backup_aes_cbc_key': backup_key,
                        'backup_segment_max_size': str(segment_size)}}
    for section, values in (options or {}).items():
        conf.setdefault(section, {}).update(values)
    return guest_factory(name, auth={'auth_token': token,
                                     'project_id': project},
                         options=conf, **kwargs)


def backup_info(instance, backup_id, name='scenario', parent=None):
    """What Trove's taskmanager passes to create_backup; with ``parent``
    (the parent's conductor update) an incremental backup, as
    ``trove backup-create --parent`` asks for it."""
    return {'id': backup_id, 'name': name, 'description': None,
            'instance_id': instance.id, 'backup_type': None,
            'checksum': None, 'datastore': 'couchdb',
            'datastore_version': '1.6',
            'parent': parent and {'location': parent['location'],
                                  'checksum': parent['checksum']}}


def wait_for_backup(instance, backup_id, timeout=180):
    """The conductor's final update_backup of one backup."""
    return instance.conductor.wait_for(
        'update_backup', instance.id,
        lambda m: (m.kwargs['backup_id'] == backup_id and
                   m.kwargs.get('state') in ('COMPLETED', 'FAILED')),
        timeout=timeout)


def delete_backup(swift_connection, location):
    """``trove backup-delete``: the object, and an SLO's segments with it."""
    container, _, name = location.rstrip('/').rpartition('/')
    container = container.rpartition('/')[2]
    head = swift_connection.head_object(container, name)
    if head.get('x-static-large-object', '').lower() == 'true':
        swift_connection.delete_object(
            container, name, query_string='multipart-manifest=delete')
    else:
        swift_connection.delete_object(container, name)


# Instances.

def delete_instance(instance):
    """``trove delete``: stop the database, then the server is destroyed.

    Trove stops the datastore of an active server (``stop_db``), then Nova
    destroys the server (a power-off: the agent gets no say) and Cinder
    deletes the volume: here ``Guest.destroy_server`` and
    ``Guest.delete_volume`` play Nova's and Cinder's parts.
    """
    instance.api.stop_db()
    instance.destroy_server()
    instance.delete_volume()
