"""Files written whole or not at all, and file system write-back."""

import os
import stat

import pytest

from trove.common import files


def test_write_atomically_replaces_with_mode(tmp_path):
    path = tmp_path / 'secret'
    path.write_bytes(b'old')
    files.write_atomically(str(path), b'new', 0o600)
    assert path.read_bytes() == b'new'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ['secret']  # no temporary file left


def test_sync_filesystem_writes_back_the_file_system_of_a_path(tmp_path):
    (tmp_path / 'data').write_bytes(b'x' * 4096)
    files.sync_filesystem(str(tmp_path))
    files.sync_filesystem(str(tmp_path / 'data'))


def test_sync_filesystem_of_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.sync_filesystem(str(tmp_path / 'missing'))
