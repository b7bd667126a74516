"""CouchDBApp without a CouchDB: its state files, configuration files and
the OS calls.

Everything that needs a server (the internal admin, status, start and
stop, the listener, system databases) runs on the real CouchDB 3.5 and on
pouchdb-server in tests/functional/couchdb/test_service_on_servers.py.
"""

import os
import stat

import pytest

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import service


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def etc(conf, tmp_path):
    conf.config(group='couchdb', config_dir=str(tmp_path / 'etc'))
    return tmp_path / 'etc'


@pytest.fixture
def app():
    return service.CouchDBApp(service_manager=object())


def test_admin_credentials_keep_root_password(tmp_path):
    creds = service.AdminCredentials(str(tmp_path / 'creds.json'))
    assert creds.load() is None and creds.root_password() is None
    creds.save('pw-1')
    creds.save_root_password('root-pw')
    creds.save('pw-2')
    assert creds.load() == ('os_admin', 'pw-2')
    assert creds.root_password() == 'root-pw'
    creds.clear_root_password()
    assert creds.root_password() is None
    assert creds.load() == ('os_admin', 'pw-2')


def test_corrupt_credentials_file_is_a_clear_error(tmp_path):
    path = tmp_path / 'creds.json'
    path.write_text('{not json')
    with pytest.raises(exception.GuestStateError) as err:
        service.AdminCredentials(str(path)).load()
    assert str(path) in str(err.value)


def test_write_config_contents(app, etc):
    assert app.write_config_contents(None) is False
    assert app.write_config_contents('') is False
    assert not (etc / 'local.d' / service.CONFIG_INI_FILE).exists()
    assert app.write_config_contents('[couchdb]\nmax_dbs_open = 500\n')
    path = etc / 'local.d' / service.CONFIG_INI_FILE
    assert path.read_text() == '[couchdb]\nmax_dbs_open = 500\n'
    assert _mode(path) == 0o640
    assert app.write_config_contents('[couchdb]\nmax_dbs_open = 500\n') \
        is False
    app.write_config_contents('[log]\nlevel = info\n')
    assert path.read_text() == '[log]\nlevel = info\n'
    assert sorted(os.listdir(etc / 'local.d')) == [
        service.CONFIG_INI_FILE, service.RUNTIME_INI_FILE]
    assert _mode(etc / 'local.d' / service.RUNTIME_INI_FILE) == 0o600


def test_set_data_ownership_chowns_the_tree(app, conf, tmp_path):
    assert os.geteuid() == 0, 'changing file owners needs root'
    data = tmp_path / 'data'
    (data / 'shards').mkdir(parents=True)
    (data / 'shards' / 'db.couch').write_text('x')
    tree = (data, data / 'shards', data / 'shards' / 'db.couch')
    for path in tree:
        os.chown(path, 65534, 65534)
    conf.config(group='couchdb', couchdb_user='root', couchdb_group='root',
                mount_point=str(data))
    app.set_data_ownership()
    assert {(os.stat(p).st_uid, os.stat(p).st_gid) for p in tree} == {(0, 0)}


def test_set_data_ownership_failure_is_raised(app, conf, tmp_path):
    conf.config(group='couchdb', couchdb_user='root', couchdb_group='root',
                mount_point=str(tmp_path / 'missing'))
    with pytest.raises(exception.ProcessExecutionError):
        app.set_data_ownership()


def test_install_if_needed_delegates_only_a_non_empty_list(app,
                                                          monkeypatch):
    from trove.guestagent.common import packages
    asked = []
    monkeypatch.setattr(packages, 'install_if_needed',
                        lambda wanted: asked.append(wanted) or wanted[:1])
    assert app.install_if_needed([]) == []
    assert app.install_if_needed(None) == []
    assert app.install_if_needed(('couchdb', 'curl')) == ['couchdb']
    assert asked == [['couchdb', 'curl']]
