"""Replicas created by Trove 26's own API models and taskmanager.

``integration/trove26/cloud.py`` runs Trove 26's ``Instance.create`` and
``Backup.create`` (what trove-api runs for ``openstack database instance
create`` and ``backup create``), its taskmanager and its conductor, over
the real RabbitMQ, with Trove's database made by its own migrations.  Its
Nova stand-in hands each server it creates to the hypervisor here, which
boots the guest from the files Trove injected (guest id and RPC key from
``guest_info.conf``): a real CouchDB 3.5 node and our agent, its backups in
the real Swift.

Trove 26's replica flow (``_create_replication_slave``) deletes the backup
it made for the replica at its end, and with none it deletes with ``None``:
every full backup of the tenant.  So: the tenant's full and incremental
backups of two instances must all survive a replica create (two replicas
at once), in Trove's database and in Swift, and still restore.
"""

import configparser
import json
import os
import queue
import subprocess
import threading
import uuid

import pytest

from integration.scenario import control_plane
from integration.services import base

TROVE26_PYTHON = base.REPO_ROOT / '.cache' / 'trove26-venv' / 'bin' / 'python'
CLOUD = base.REPO_ROOT / 'integration' / 'trove26' / 'cloud.py'
BACKUP_KEY = 'trove26-backup-key-0123456789abcdef'
SEGMENT = 64 * 1024
ALICE = {'name': 'alice', 'password': 'alice-pw-1',
         'databases': [{'name': 'shop'}]}


@pytest.fixture
def server_kind():
    """Every guest here runs a real CouchDB 3.5 node."""
    return 'couchdb3'


class Hypervisor(threading.Thread):
    """Boots the servers the Nova stand-in creates: each a guest started
    from the files Trove injected; deletes the ones it deletes."""

    def __init__(self, nova_dir, boot):
        super().__init__(daemon=True)
        self.nova_dir = nova_dir
        self.boot = boot
        self.guests = {}
        self.errors = queue.Queue()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(0.1):
            for request in sorted(self.nova_dir.glob('*.boot.json')):
                server_id = request.name[:-len('.boot.json')]
                if server_id not in self.guests:
                    self._boot(server_id, json.loads(request.read_text()))
            for request in sorted(self.nova_dir.glob('*.delete')):
                guest = self.guests.get(request.stem)
                if guest is not None:
                    guest.destroy_server()
                (self.nova_dir / (request.stem + '.deleted')).touch()
                request.unlink()

    def _boot(self, server_id, request):
        marker = self.nova_dir / server_id
        try:
            info = configparser.ConfigParser(interpolation=None)
            info.read_string(next(
                content for path, content in request['files'].items()
                if path.endswith('guest_info.conf')))
            guest = self.boot(request['name'], info['DEFAULT'])
            self.guests[server_id] = guest
            marker.with_suffix('.active').touch()
        except Exception as exc:
            self.guests[server_id] = None
            self.errors.put('%s: %s' % (server_id, exc))
            marker.with_suffix('.error').touch()

    def stop(self):
        self._halt.set()
        if self.is_alive():
            self.join(10)


class TroveCloud:
    """The control plane process and the commands a tenant sends it."""

    def __init__(self, workdir, proc, hypervisor):
        self.workdir = workdir
        self.proc = proc
        self.hypervisor = hypervisor

    def call(self, command, **kwargs):
        self.proc.stdin.write(json.dumps(dict(kwargs, command=command))
                              + '\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail('the Trove 26 control plane exited:\n%s'
                        % self.log(), pytrace=False)
        answer = json.loads(line)
        if not answer['ok']:
            pytest.fail('%s failed: %s\n%s' % (
                command, answer['error'], answer['traceback']),
                pytrace=False)
        return answer['result']

    def log(self, chars=6000):
        """The end of Trove's log (all of it with ``chars=None``)."""
        path = self.workdir / 'trove26.log'
        if not path.exists():
            return '(no log)'
        text = path.read_text(errors='replace')
        return text if chars is None else text[-chars:]

    def active(self, instance_id, timeout=180):
        """Wait until Trove shows the instance ACTIVE (no task, running)."""
        def settled():
            row = self.call('instances').get(instance_id)
            if row and (row['faults'] or 'ERROR' in row['task_status']):
                pytest.fail('instance %s: %s\n%s' % (instance_id, row,
                                                     self.log()),
                            pytrace=False)
            return row if (row and row['task_status'] == 'NONE'
                           and row['service_status'] == 'running') else None
        return control_plane.wait_until(settled, timeout,
                                        'instance %s ACTIVE' % instance_id,
                                        interval=0.5)

    def backup(self, backup_id):
        return next(b for b in self.call('backups') if b['id'] == backup_id)

    def completed(self, backup_id, timeout=180):
        def done():
            row = self.backup(backup_id)
            if row['state'] in ('FAILED', 'DELETE_FAILED'):
                pytest.fail('backup %s: %s' % (backup_id, row),
                            pytrace=False)
            return row if row['state'] == 'COMPLETED' else None
        return control_plane.wait_until(done, timeout,
                                        'backup %s COMPLETED' % backup_id,
                                        interval=0.5)


@pytest.fixture
def trove_cloud(tmp_path, rabbitmq, swift, guest_factory):
    if not TROVE26_PYTHON.exists():
        pytest.fail('%s missing: run tools/bootstrap' % TROVE26_PYTHON,
                    pytrace=False)
    workdir = tmp_path / 'trove26'
    nova_dir = workdir / 'nova'
    nova_dir.mkdir(parents=True)
    token, storage_url = swift.token_and_storage_url()
    tenant = swift.account[len('AUTH_'):]
    conductor_queue = 'trove-conductor-%s' % uuid.uuid4().hex

    def boot(name, guest_info):
        return control_plane.swift_guest(
            guest_factory, swift, name, BACKUP_KEY, SEGMENT,
            options={'DEFAULT': {'conductor_queue': conductor_queue},
                     'couchdb': {'replication_sync_interval': '0.5'}},
            guest_id=guest_info['guest_id'],
            key=guest_info['instance_rpc_encr_key'])

    hypervisor = Hypervisor(nova_dir, boot)
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME')}
    proc = subprocess.Popen(
        [str(TROVE26_PYTHON), str(CLOUD)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, cwd=workdir, env=env)
    cloud = TroveCloud(workdir, proc, hypervisor)
    try:
        proc.stdin.write(json.dumps({
            'workdir': str(workdir), 'nova_dir': str(nova_dir),
            'transport_url': rabbitmq.transport_url,
            'conductor_queue': conductor_queue,
            'taskmanager_queue': 'taskmanager-%s' % uuid.uuid4().hex,
            'swift_url': storage_url[:-len(tenant)], 'tenant': tenant,
            'token': token}) + '\n')
        proc.stdin.flush()
        ready = proc.stdout.readline()
        if not ready or not json.loads(ready).get('ok'):
            pytest.fail('the Trove 26 control plane did not start: %s\n%s'
                        % (ready, cloud.log()), pytrace=False)
        hypervisor.start()
        yield cloud
    finally:
        hypervisor.stop()
        proc.stdin.close()
        try:
            proc.wait(base.scaled(30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for guest in hypervisor.guests.values():
            if guest is not None:
                guest.destroy_server()


def _docs(guest, count, prefix):
    session = guest.session(ALICE['name'], ALICE['password'])
    docs = [{'_id': '%s-%04d' % (prefix, i), 'n': i} for i in range(count)]
    answer = session.post(guest.url('shop', '_bulk_docs'),
                          json={'docs': docs}, timeout=30)
    assert answer.status_code == 201, answer.text


def _ids(guest):
    """The tenant's documents in shop, as alice reads them (the design
    document replication adds on a source is not hers)."""
    session = guest.session(ALICE['name'], ALICE['password'])
    answer = session.get(guest.url('shop', '_all_docs'), timeout=30)
    assert answer.status_code == 200, answer.text
    return {row['id'] for row in answer.json()['rows']
            if not row['id'].startswith('_design/')}


def _swift_names(swift):
    conn = swift.connection()
    return {o['name'] for o in conn.get_container(
        control_plane.BACKUP_CONTAINER, full_listing=True)[1]}


def _stored(swift, row):
    """The backup's objects in Swift: its manifest, its first segment and
    its index."""
    name = row['location'].rstrip('/').rpartition('/')[2]
    return {name, name + '_00000000', name + '_index'} <= _swift_names(swift)


def test_replicas_keep_the_tenants_backups(trove_cloud, swift):
    cloud = trove_cloud
    guests = cloud.hypervisor.guests

    def instance(name, **kwargs):
        created = cloud.call('create_instance', name=name, **kwargs)
        cloud.active(created['id'])
        return created['id']

    def guest_of(instance_id):
        return guests['server-' + instance_id]

    a = instance('a', databases=['shop'], users=[ALICE])
    b = instance('b', databases=['shop'], users=[ALICE])
    backups = {}
    for name, instance_id in (('a', a), ('b', b)):
        _docs(guest_of(instance_id), 50, name + '-full')
        full = cloud.call('create_backup', instance_id=instance_id,
                          name=name + '-full')['id']
        backups[name + '-full'] = cloud.completed(full)
        _docs(guest_of(instance_id), 20, name + '-inc')
        inc = cloud.call('create_backup', instance_id=instance_id,
                         name=name + '-inc', parent_id=full)
        assert inc['parent_id'] == full
        backups[name + '-inc'] = cloud.completed(inc['id'])
    assert backups['a-inc']['backup_type'] == 'CouchDBBackupIncremental'
    expected_a = _ids(guest_of(a))
    expected_b = _ids(guest_of(b))

    # openstack database instance create --replica-of a --replica-count 2
    first = cloud.call('create_instance', name='a-replica', replica_of=a,
                       replica_count=2)['id']
    replicas = control_plane.wait_until(
        lambda: [i for i, row in cloud.call('instances').items()
                 if row['replica_of'] == a] if len(
            [row for row in cloud.call('instances').values()
             if row['replica_of'] == a]) == 2 else None,
        60, 'two replicas of a in Trove')
    assert first in replicas
    for replica in replicas:
        assert cloud.active(replica, timeout=240)['faults'] == []

    # Every backup of the tenant is still there, in Trove and in Swift.
    rows = {row['id']: row for row in cloud.call('backups')}
    for name, before in backups.items():
        row = rows[before['id']]
        assert not row['deleted'] and row['state'] == 'COMPLETED', (name,
                                                                     row)
        assert _stored(swift, row), '%s is gone from Swift' % name
    # The one backup Trove made for the replicas, and deleted at the end:
    # an incremental on a's last backup, its objects gone too.
    snapshots = [row for row in rows.values()
                 if row['id'] not in {b['id'] for b in backups.values()}]
    assert len(snapshots) == 1, snapshots
    snapshot = snapshots[0]
    assert snapshot['name'].startswith('Replication snapshot for ')
    assert snapshot['deleted'] and snapshot['instance_id'] == a
    assert snapshot['parent_id'] == backups['a-inc']['id']
    assert not [n for n in _swift_names(swift)
                if n.startswith(snapshot['id'])]
    assert not cloud.call('instances')[a]['faults']
    # The snapshot carried the source's replication password: Trove's
    # taskmanager logs the snapshot, never the password (patch 0003).
    state = json.loads((guest_of(a).agent.state_dir /
                        'couchdb-replication.json').read_text())
    assert state['source_password']
    assert 'Snapshot info for creating replica' in cloud.log(chars=None)
    assert state['source_password'] not in cloud.log(chars=None)

    # The replicas hold a's documents, and follow a.
    for replica in map(guest_of, replicas):
        control_plane.wait_until(
            lambda r=replica: _ids(r) == expected_a, 60,
            "a's documents on replica %s" % replica.id)
    session = guest_of(a).session(ALICE['name'], ALICE['password'])
    assert session.put(guest_of(a).url('shop', 'after-replicas'),
                       json={'v': 1}, timeout=10).status_code == 201
    for replica in map(guest_of, replicas):
        control_plane.wait_until(
            lambda r=replica: 'after-replicas' in _ids(r), 30,
            'the new write on replica %s' % replica.id)

    # And every backup still restores: each incremental with its full
    # backup (openstack database instance create --backup).
    for name, expected in (('a-inc', expected_a), ('b-inc', expected_b)):
        restored = instance(name + '-restored', backup_id=backups[name]['id'])
        assert _ids(guest_of(restored)) == expected
    assert cloud.hypervisor.errors.empty(), cloud.hypervisor.errors.get()
