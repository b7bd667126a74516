"""backup: ``trove backup-create``, ``trove create --backup``,
``trove backup-delete``."""

import json
import time
import uuid

from integration.scenario import control_plane as cp
from integration.scenario.helpers.test_helper import DataType
from integration.scenario.runners import base


class BackupRunner(base.TestRunner):

    def run_add_backup_data(self):
        self.helper.add_data(DataType.small, self.instance.couchdb.url)

    def run_create_backup(self):
        api = self.instance.api
        self.databases = self.names(api.list_databases())
        self.users = self.names(api.list_users())
        self.backup_id = str(uuid.uuid4())
        self.since = time.time()
        api.create_backup(cp.backup_info(self.instance, self.backup_id))

    def run_wait_for_backup(self):
        done = cp.wait_for_backup(self.instance, self.backup_id).kwargs
        assert done['state'] == 'COMPLETED', 'the backup failed: %s' % (
            done.get('note'))
        states = [m.kwargs['state'] for m in self.conductor.select(
            'update_backup', self.instance.id, self.since)
            if m.kwargs['backup_id'] == self.backup_id]
        assert states == ['BUILDING', 'COMPLETED'], states
        assert done['success'] is True and 'size' in done, done
        assert done['backup_type'] == 'CouchDBBackup', done
        self.backup = done

    def run_verify_backup_in_swift(self):
        container, name = self.backup['location'].split('/')[-2:]
        conn = self.cloud.swift_connection()
        head = conn.head_object(container, name)
        assert head['etag'].strip('"') == self.backup['checksum'], head
        assert head.get('x-static-large-object') == 'True', head
        _, manifest = conn.get_object(container, name, query_string=(
            'multipart-manifest=get'))
        segments = json.loads(manifest)
        assert len(segments) > 1, 'one segment: %s' % segments
        assert all(s['bytes'] <= base.BACKUP_SEGMENT_SIZE
                   for s in segments), segments

    def run_add_data_after_backup(self):
        self.helper.add_data(DataType.micro2, self.instance.couchdb.url)

    def run_restore_backup_as_new_instance(self):
        self.restored = self.cloud.create_instance('restored')
        self.restored.prepare(backup_info={
            'id': self.backup_id, 'instance_id': self.instance.id,
            'type': self.backup['backup_type'],
            'location': self.backup['location'],
            'checksum': self.backup['checksum']})

    def run_wait_for_restored_instance(self):
        self.wait_for_running(self.restored, timeout=180)

    def run_verify_restored_data(self):
        host = self.restored.couchdb.url
        self.helper.verify_data(DataType.small, host)
        self.helper.verify_data_absent(DataType.micro2, host)

    def run_verify_restored_databases_and_users(self):
        api = self.restored.api
        assert self.names(api.list_databases()) == self.databases
        assert self.names(api.list_users()) == self.users
        creds = self.helper.get_helper_credentials()
        assert [d['_name'] for d in api.list_access(creds['name'], '%')] == [
            creds['database']]

    def run_delete_restored_instance(self):
        cp.delete_instance(self.restored)

    def run_delete_backup(self):
        conn = self.cloud.swift_connection()
        cp.delete_backup(conn, self.backup['location'])
        container = self.backup['location'].split('/')[-2]
        _, listing = conn.get_container(container)
        left = [o['name'] for o in listing
                if o['name'].startswith(self.backup_id)]
        assert not left, 'left in Swift: %s' % left

    def run_remove_backup_data(self):
        host = self.instance.couchdb.url
        for data_type in (DataType.small, DataType.micro2):
            self.helper.remove_data(data_type, host)
            self.helper.verify_data_absent(data_type, host)
