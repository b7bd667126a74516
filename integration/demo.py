"""The project's main job, run locally: one Trove guest, end to end.

Starts RabbitMQ, a single-node Swift and, for each instance, a real
Apache CouchDB 3.5 node (``--server pouchdb``: pouchdb-server, the CouchDB
1.6 API) on loopback, starts the real agent process
(``trove-guestagent``), then plays Trove's control plane: prepare, create a
database and a user, write documents as that user, show the heartbeats the
conductor receives, back the instance up to Swift, restore the backup as a
second instance, and attach that second instance as a read replica of the
first.  Everything it started is stopped at the end, whatever happens.

Run it with ``tools/demo`` (which installs what is missing first).
"""

import trove  # noqa: F401,I001  (threading backend before oslo.messaging)

import argparse
import contextlib
import logging
import pathlib
import secrets
import shutil
import sys
import tempfile
import time
import uuid

import oslo_messaging as messaging
import requests

from integration import conductor as conductor_listener
from integration import guest as guest_mod
from integration.scenario import control_plane
from integration.services import rabbitmq
from integration.services import servers
from integration.services import swift as swift_mod
import trove.common.cfg  # noqa: F401
from trove import rpc


def say(text, *args):
    print(("==> " + text) % args, flush=True)


def show(text, *args):
    print(("    " + text) % args, flush=True)


def _schema(name):
    return {'_name': name, '_collate': None, '_character_set': None}


def start_services(stack, workdir):
    say("Starting RabbitMQ on loopback")
    broker = rabbitmq.RabbitMQBroker(workdir / 'rabbitmq')
    stack.callback(broker.stop)
    broker.start()
    show("broker ready at %s", broker.transport_url.replace(
        'guest:guest@', ''))
    rpc.set_defaults('trove')
    rpc.TRANSPORT = messaging.get_rpc_transport(
        rpc.CONF, url=broker.transport_url,
        allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    stack.callback(rpc.cleanup)
    listener = conductor_listener.ConductorListener(rpc.TRANSPORT).start()
    stack.callback(listener.stop)
    say("Starting a single-node OpenStack Swift on loopback")
    swift = swift_mod.SwiftCluster(workdir / 'swift')
    stack.callback(swift.stop)
    swift.start()
    show("Swift proxy at %s", swift.proxy_url)
    return broker, listener, swift


# The operator's backup key: one for the whole cloud, as Trove configures.
BACKUP_KEY = secrets.token_hex(32)


SERVER_NAMES = {'couchdb3': 'CouchDB 3.5', 'pouchdb': 'pouchdb-server'}


def start_guest(stack, workdir, broker, listener, swift, name, kind):
    couchdb = servers.make_server(kind, workdir / name / 'couchdb')
    couchdb.data_dir.mkdir(parents=True, exist_ok=True)
    stack.callback(couchdb.stop)
    token, storage_url = swift.token_and_storage_url()
    options = {'DEFAULT': {'swift_url': storage_url[:-len('test')],
                           'backup_aes_cbc_key': BACKUP_KEY}}
    agent = guest_mod.GuestAgent(workdir / name / 'agent',
                                 broker.transport_url, couchdb,
                                 report_interval=2, options=options)
    stack.callback(agent.stop)
    say("Starting guest agent %s: trove-guestagent --config-dir %s", name,
        agent.conf_dir)
    agent.start()
    show("instance %s, %s will listen on %s", agent.guest_id,
         SERVER_NAMES[kind], couchdb.url)
    return guest_mod.Guest(agent, listener, auth_token=token,
                           project_id='test')


def prepare(guest, alice_password):
    say("Control plane: prepare (database 'inventory', user 'alice')")
    since = time.time()
    message = guest.prepare_and_wait(
        databases=[_schema('inventory')],
        users=[{'_name': 'alice', '_password': alice_password,
                '_host': '%', '_databases': [_schema('inventory')]}])
    for status in guest.conductor.statuses(guest.id, since):
        show("conductor <- heartbeat: %s", status)
    status = message.kwargs['payload']['service_status']
    if status != 'running':
        raise SystemExit("prepare failed; agent log: %s" %
                         guest.agent.agent_log)


def manage(guest, bob_password):
    api = guest.api
    say("Control plane: create database 'orders' and user 'bob'")
    api.create_database([_schema('orders')])
    _until(lambda: len(api.list_databases()[0]) == 2)
    api.create_user([{'_name': 'bob', '_password': bob_password,
                      '_host': '%', '_databases': []}])
    _until(lambda: api.get_user('bob', '%') is not None)
    api.grant_access('bob', '%', ['orders'])
    show("databases: %s", [d['_name'] for d in api.list_databases()[0]])
    for user in api.list_users()[0]:
        show("user %s can use %s", user['_name'],
             [d['_name'] for d in user['_databases']])
    show("root enabled: %s", api.is_root_enabled())


def write_documents(guest, alice_password):
    say("As tenant user 'alice': write documents into 'inventory'")
    session = guest.session('alice', alice_password)
    docs = [{'_id': 'item-%03d' % i, 'name': 'widget %d' % i, 'qty': i}
            for i in range(1, 11)]
    answer = session.post(guest.url('inventory', '_bulk_docs'),
                          json={'docs': docs}, timeout=10)
    answer.raise_for_status()
    listing = session.get(guest.url('inventory', '_all_docs'),
                          params={'limit': 3}, timeout=10).json()
    show("wrote %d documents; inventory holds %d; first: %s", len(docs),
         listing['total_rows'], [row['id'] for row in listing['rows']])
    stranger = session.get(guest.url('orders'), timeout=10)
    show("alice reading 'orders' (no grant): HTTP %s",
         stranger.status_code)


def heartbeats(guest, count=3):
    say("Heartbeats the conductor receives (every 2 s)")
    since = time.time()
    for _ in range(count):
        message = guest.conductor.wait_for(
            'heartbeat', guest.id, timeout=15, since=since)
        since = message.received + 0.001
        show("%s heartbeat: %s", time.strftime(
            '%H:%M:%S', time.localtime(message.kwargs['sent'])),
            message.kwargs['payload']['service_status'])
    stats = guest.api.get_filesystem_stats()
    show("data volume: %.2f GB total, %.2f GB used", stats['total'],
         stats['used'])


def backup(guest):
    say("Control plane: create_backup of instance %s", guest.id)
    backup_id = str(uuid.uuid4())
    since = time.time()
    guest.api.create_backup({'id': backup_id, 'name': 'demo',
                             'instance_id': guest.id, 'parent': None,
                             'datastore': 'couchdb',
                             'datastore_version':
                                 guest.couchdb.datastore_version})
    done = guest.conductor.wait_for(
        'update_backup', guest.id,
        lambda m: m.kwargs.get('state') in ('COMPLETED', 'FAILED'),
        timeout=120, since=since)
    for message in guest.conductor.select('update_backup', guest.id, since):
        fields = message.kwargs
        show("conductor <- update_backup: %s%s", fields['state'], ''.join(
            ', %s=%s' % (k, fields[k]) for k in (
                'size', 'checksum', 'location', 'note')
            if fields.get(k) not in (None, '')))
    if done.kwargs['state'] != 'COMPLETED':
        raise SystemExit("the backup failed: %s" % done.kwargs.get('note'))
    return {'id': backup_id, 'instance_id': guest.id,
            'type': done.kwargs['backup_type'],
            'location': done.kwargs['location'],
            'checksum': done.kwargs['checksum']}


def restore(guest, backup_info, alice_password):
    say("Control plane: prepare instance %s from backup %s", guest.id,
        backup_info['id'])
    since = time.time()
    message = guest.prepare_and_wait(backup_info=backup_info)
    for status in guest.conductor.statuses(guest.id, since):
        show("conductor <- heartbeat: %s", status)
    if message.kwargs['payload']['service_status'] != 'running':
        raise SystemExit("the restore failed; agent log: %s" %
                         guest.agent.agent_log)
    session = guest.session('alice', alice_password)
    listing = session.get(guest.url('inventory', '_all_docs'),
                          params={'limit': 3}, timeout=10).json()
    show("restored: databases %s; as alice, inventory holds %d documents; "
         "first: %s", [d['_name'] for d in guest.api.list_databases()[0]],
         listing['total_rows'], [row['id'] for row in listing['rows']])


def replicate(source, replica, alice_password, swift):
    say("Control plane: create instance %s as a read replica of %s",
        replica.id, source.id)
    # As Trove 26's create-replica does: a backup of the source for the
    # replica (its replication snapshot), the new instance prepared from
    # it, then that backup deleted.
    message, = control_plane.create_replica(source, replica,
                                            swift.connection())
    show("the replica was restored from the source's backup and replicates "
         "what came after it")
    if message.kwargs['payload']['service_status'] != 'running':
        raise SystemExit("the replica failed; agent log: %s" %
                         replica.agent.agent_log)
    writer = source.session('alice', alice_password)
    reader = replica.session('alice', alice_password)
    answer = writer.put(source.url('inventory', 'item-new'),
                        json={'name': 'written on the source', 'qty': 1},
                        timeout=10)
    answer.raise_for_status()
    start = time.monotonic()
    # CouchDB 3.x starts a new replication job after a random delay of up
    # to 5 s ([replicator] startup_jitter).
    _until(lambda: _reads(reader, replica.url('inventory', 'item-new')),
           timeout=60)
    show("alice wrote 'item-new' on the source; on the replica %.2f s "
         "later", time.monotonic() - start)
    refused = reader.put(replica.url('inventory', 'item-local'),
                         json={'qty': 1}, timeout=10)
    show("alice writing on the replica: HTTP %s, %s", refused.status_code,
         refused.json().get('reason'))
    txn = source.api.get_latest_txn_id()
    replica.api.wait_for_txn(txn)
    source_id, replicated = replica.api.get_last_txn()
    show("source update_seq per database %s; the replica has verified %d "
         "changes from %s", txn, replicated, source_id)


def _reads(session, url):
    """Whether ``url`` answers 200; False while the server restarts."""
    try:
        return session.get(url, timeout=10).ok
    except requests.ConnectionError:
        return False


def _until(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the guest")
        time.sleep(0.2)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='tools/demo', description='One Trove guest, end to end.')
    parser.add_argument('--server', choices=servers.KINDS,
                        default='couchdb3',
                        help='the server each instance runs: the real '
                        'CouchDB 3.5 (default) or pouchdb-server (1.6 API)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # py-amqp warns about a frame that arrives while Trove's client closes
    # the channel it used to create the guest's queue: harmless, not shown.
    logging.getLogger('amqp').setLevel(logging.ERROR)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='couchdb-guest-demo-'))
    alice_password = secrets.token_urlsafe(12)
    bob_password = secrets.token_urlsafe(12)
    try:
        with contextlib.ExitStack() as stack:
            broker, listener, swift = start_services(stack, workdir)
            guest = start_guest(stack, workdir, broker, listener, swift,
                                'first', args.server)
            prepare(guest, alice_password)
            manage(guest, bob_password)
            write_documents(guest, alice_password)
            heartbeats(guest)
            backup_info = backup(guest)
            second = start_guest(stack, workdir, broker, listener, swift,
                                 'second', args.server)
            restore(second, backup_info, alice_password)
            third = start_guest(stack, workdir, broker, listener, swift,
                                'replica', args.server)
            replicate(guest, third, alice_password, swift)
            say("Stopping everything the demo started")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say("Done")
    return 0


if __name__ == '__main__':
    sys.exit(main())
