"""The control plane's side of Trove's flows, call for call.

Each function makes the guest calls Trove 26's taskmanager makes for one
user-facing action (``trove/taskmanager/{manager,models}.py`` and
``trove/instance/models.py``), in the same order, through
``trove/guestagent/api.py``.  The scenario runners and the replication
tests share them, so both follow the same, single reading of Trove.
"""

import time

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

def create_replica(source, replica, timeout=120):
    """``trove create --replica_of``: the source's snapshot, then prepare.

    CouchDB replicates everything itself, so the source needs no backup
    (``backup_required_for_replication`` is False) and the snapshot carries
    only the replica context.  Returns the replica's prepare heartbeat.
    """
    if source.api.backup_required_for_replication():
        raise AssertionError('%s asks for a backup before replication'
                             % source.id)
    snapshot = source.api.get_replication_snapshot(
        snapshot_info={'id': None, 'instance_id': source.id,
                       'name': 'Replication snapshot', 'backup_info': {}},
        replica_source_config=None)
    snapshot['config'] = ''
    return replica.prepare_and_wait(snapshot=snapshot, timeout=timeout)


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
