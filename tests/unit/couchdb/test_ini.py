"""CouchDB ini files edited line by line (couchdb/ini.py)."""

import stat

from trove.guestagent.datastore.experimental.couchdb import ini


def test_set_value_keeps_the_other_lines(tmp_path):
    path = tmp_path / 'runtime.ini'
    path.write_text('; kept by CouchDB\n[admins]\nos_admin = -pbkdf2-x\n\n'
                    '[couchdb]\nmax_dbs_open = 300\nuuid = 0ld\n'
                    '[log]\nlevel = info')
    path.chmod(0o640)
    ini.set_value(str(path), 'couchdb', 'uuid', 'abc123')
    assert path.read_text() == (
        '; kept by CouchDB\n[admins]\nos_admin = -pbkdf2-x\n\n'
        '[couchdb]\nmax_dbs_open = 300\nuuid = abc123\n'
        '[log]\nlevel = info\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    ini.set_value(str(path), 'uuids', 'algorithm', 'random')
    assert path.read_text().endswith(
        '[log]\nlevel = info\n\n[uuids]\nalgorithm = random\n')
    empty = tmp_path / 'new.ini'
    ini.set_value(str(empty), 'couchdb', 'uuid', 'u1')
    assert empty.read_text() == '[couchdb]\nuuid = u1\n'


def test_remove_value_keeps_the_rest(tmp_path):
    path = tmp_path / 'runtime.ini'
    path.write_text('[admins]\nos_admin = secret\nroot = -pbkdf2-r\n'
                    '[couchdb]\nuuid = u1\n')
    path.chmod(0o600)
    assert ini.remove_value(str(path), 'admins', 'os_admin') is True
    assert path.read_text() == ('[admins]\nroot = -pbkdf2-r\n'
                                '[couchdb]\nuuid = u1\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ini.remove_value(str(path), 'admins', 'os_admin') is False
    assert ini.remove_value(str(tmp_path / 'none.ini'), 'a', 'b') is False
    assert not (tmp_path / 'none.ini').exists()


def test_get_value(tmp_path):
    path = tmp_path / 'runtime.ini'
    path.write_text('[admins]\nos_admin = -pbkdf2:sha256-x,y,600000\n'
                    '[couchdb]\nuuid = u1\n')
    assert ini.get_value(str(path), 'admins', 'os_admin') == \
        '-pbkdf2:sha256-x,y,600000'
    assert ini.get_value(str(path), 'couchdb', 'os_admin') is None
    assert ini.get_value(str(tmp_path / 'none.ini'), 'a', 'b') is None
