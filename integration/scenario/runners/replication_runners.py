"""replication: ``trove create --replica_of``, ``promote-to-replica-source``,
``eject-replica-source``, ``detach-replica``.

The main instance is the source; two replicas follow it.  The first
replica is promoted, then dies and is ejected; the original instance ends
as the source again, and the last replica is detached and deleted.
"""

from integration.scenario import control_plane as cp
from integration.scenario.helpers.test_helper import DataType
from integration.scenario.runners import base

# How long replicated data may take to show (the agents sync every 0.5 s).
ARRIVAL = 60


class ReplicationRunner(base.TestRunner):

    def _arrives(self, data_type, instances):
        for instance in instances:
            self.wait_until(
                lambda i=instance: self._has(data_type, i), ARRIVAL,
                'the %s data set on %s' % (data_type.name,
                                           instance.agent.workdir.name))

    def _has(self, data_type, instance):
        try:
            self.helper.verify_data(data_type, instance.couchdb.url)
        except AssertionError:
            return False
        return True

    def _refuses_writes(self, instance):
        creds = self.helper.get_helper_credentials()
        status = self.helper.helper_client(instance.couchdb.url).write(
            creds['database'], 'scenario-refused', {'v': 1})
        assert status == 403, (
            '%s accepted a write (%s)' % (instance.agent.workdir.name,
                                          status))

    def run_add_data_for_replication(self):
        self.helper.add_data(DataType.tiny2, self.instance.couchdb.url)

    def run_create_replicas(self):
        self.cloud.replicas = [self.cloud.create_instance('replica1'),
                               self.cloud.create_instance('replica2')]
        # `--replica-count 2`: one snapshot, both replicas prepared with it.
        messages = cp.create_replica(self.instance, self.cloud.replicas,
                                     self.cloud.swift_connection())
        for replica, message in zip(self.cloud.replicas, messages,
                                    strict=True):
            status = message.kwargs['payload']['service_status']
            assert status == 'running', '%s: %s\n%s' % (
                replica.agent.workdir.name, status,
                replica.agent.log_text()[-3000:])

    def run_verify_replicated_data(self):
        self._arrives(DataType.tiny2, self.cloud.replicas)

    def run_add_data_after_replicas(self):
        self.helper.add_data(DataType.tiny3, self.instance.couchdb.url)
        self._arrives(DataType.tiny3, self.cloud.replicas)

    def run_verify_replicas_read_only(self):
        for replica in self.cloud.replicas:
            self._refuses_writes(replica)

    def run_promote_to_replica_source(self):
        first, second = self.cloud.replicas
        cp.promote(first, self.instance, [first, second])
        self.source = first

    def run_verify_new_source(self):
        first, second = self.cloud.replicas
        self.helper.add_data(DataType.micro, first.couchdb.url)
        self._arrives(DataType.micro, [self.instance, second])
        self._refuses_writes(self.instance)

    def run_eject_dead_source(self):
        first, second = self.cloud.replicas
        first.destroy_server()
        # Trove ejects only a source whose heartbeats have stopped.
        self.ensure_silent(self.conductor, first,
                           3 * self.cloud.report_interval)
        self.source = cp.eject(first.id, [self.instance, second])

    def run_verify_after_eject(self):
        first, second = self.cloud.replicas
        self.helper.add_data(DataType.micro3, self.source.couchdb.url)
        follower = second if self.source is self.instance else self.instance
        self._arrives(DataType.micro3, [follower])
        self._refuses_writes(follower)

    def run_promote_original_source(self):
        _first, second = self.cloud.replicas
        if self.source is not self.instance:
            cp.promote(self.instance, self.source, [self.instance])
        self.source = self.instance
        self.helper.add_data(DataType.micro2, self.instance.couchdb.url)
        self._arrives(DataType.micro2, [second])
        self._refuses_writes(second)

    def run_detach_replica(self):
        _first, second = self.cloud.replicas
        info = cp.detach(second, self.instance)
        assert info['replica_id'] == second.id, info
        creds = self.helper.get_helper_credentials()
        client = self.helper.helper_client(second.couchdb.url)
        assert client.write(creds['database'], 'detached', {'v': 1}) == 201
        assert self.instance.api.get_replica_context()['master']

    def run_delete_replicas(self):
        first, second = self.cloud.replicas
        cp.delete_instance(second)
        first.delete_volume()          # its server is already gone
        self.cloud.replicas = []

    def run_remove_replicated_data(self):
        host = self.instance.couchdb.url
        for data_type in (DataType.tiny2, DataType.tiny3, DataType.micro,
                          DataType.micro2, DataType.micro3):
            self.helper.remove_data(data_type, host)
            self.helper.verify_data_absent(data_type, host)
