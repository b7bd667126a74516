"""The project's main job, run locally: one Trove guest, end to end.

Starts RabbitMQ and a CouchDB-compatible server (pouchdb-server) on loopback,
starts the real agent process (``trove-guestagent``), then plays Trove's
control plane: prepare, create a database and a user, write documents as that
user, and show the heartbeats the conductor receives.  Everything it started
is stopped at the end, whatever happens.

Run it with ``tools/demo`` (which installs what is missing first).
"""

import trove  # noqa: F401,I001  (threading backend before oslo.messaging)

import contextlib
import logging
import pathlib
import secrets
import shutil
import sys
import tempfile
import time

import oslo_messaging as messaging

from integration import conductor as conductor_listener
from integration import guest as guest_mod
from integration.services import pouchdb
from integration.services import rabbitmq
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
    return broker, listener


def start_guest(stack, workdir, broker, listener):
    couchdb = pouchdb.PouchDBServer(workdir / 'couchdb')
    couchdb.data_dir.mkdir(parents=True, exist_ok=True)
    couchdb.config_file.parent.mkdir(parents=True, exist_ok=True)
    stack.callback(couchdb.stop)
    agent = guest_mod.GuestAgent(workdir / 'agent', broker.transport_url,
                                 couchdb, report_interval=2)
    stack.callback(agent.stop)
    say("Starting the guest agent: trove-guestagent --config-dir %s",
        agent.conf_dir)
    agent.start()
    show("instance %s, CouchDB (pouchdb-server) will listen on %s",
         agent.guest_id, couchdb.url)
    return guest_mod.Guest(agent, listener)


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


def _until(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the guest")
        time.sleep(0.2)


def main():
    # py-amqp warns about a frame that arrives while Trove's client closes
    # the channel it used to create the guest's queue: harmless, not shown.
    logging.getLogger('amqp').setLevel(logging.ERROR)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='couchdb-guest-demo-'))
    alice_password = secrets.token_urlsafe(12)
    bob_password = secrets.token_urlsafe(12)
    try:
        with contextlib.ExitStack() as stack:
            broker, listener = start_services(stack, workdir)
            guest = start_guest(stack, workdir, broker, listener)
            prepare(guest, alice_password)
            manage(guest, bob_password)
            write_documents(guest, alice_password)
            heartbeats(guest)
            say("Stopping everything the demo started")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say("Done")
    return 0


if __name__ == '__main__':
    sys.exit(main())
