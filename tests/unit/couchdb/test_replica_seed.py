"""The backup a new replica is restored from, as its prepare completes it.

Trove reads the replication snapshot's location and checksum from its
database, which the conductor fills from the source's last update_backup, a
cast that may arrive after the taskmanager has read the row; the snapshot
carries them from the source itself.
"""

from trove.guestagent.datastore.experimental.couchdb import manager

SEED = {'backup_id': 'b-1', 'since': {'shop': '12-abc'},
        'location': 'http://swift/v1/AUTH_t/database_backups/b-1.tar.gz.enc',
        'checksum': '0' * 32, 'backup_type': 'CouchDBBackupIncremental'}


def _complete(backup_info, seed=SEED):
    return manager.Manager._seed_backup_info(backup_info, {'seed': seed})


def test_a_row_not_yet_completed_takes_the_snapshots_location():
    info = _complete({'id': 'b-1', 'location': None, 'checksum': None,
                      'type': None, 'instance_id': 'src'})
    assert info == {'id': 'b-1', 'location': SEED['location'],
                    'checksum': SEED['checksum'],
                    'type': 'CouchDBBackupIncremental',
                    'instance_id': 'src'}


def test_trove_s_completed_row_is_kept_as_it_is():
    row = {'id': 'b-1', 'location': 'http://swift/other', 'checksum': '1',
           'type': 'CouchDBBackup'}
    assert _complete(dict(row)) == row


def test_another_backup_than_the_snapshot_s_is_never_completed():
    row = {'id': 'b-2', 'location': None, 'checksum': None, 'type': None}
    assert _complete(dict(row)) == row
    assert manager.Manager._seed_backup_info(dict(row), None) == row
