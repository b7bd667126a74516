"""The option reference: every group exported, the sample kept current."""

import pathlib
import subprocess
import sys

from oslo_config import cfg
import pytest

from trove.common import cfg as trove_cfg
from trove.common import exception

REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = REPO / 'etc' / 'trove' / 'trove-guestagent.conf.sample'


def test_list_opts_exports_every_registered_group():
    exported = {(group.name if isinstance(group, cfg.OptGroup) else group)
                for group, _opts in trove_cfg.list_opts()}
    assert exported == {None, 'couchdb', 'upgrade_levels'}
    names = {opt.name for _group, opts in trove_cfg.list_opts()
             for opt in opts}
    for name in ('guest_id', 'instance_rpc_encr_key', 'tcp_ports',
                 'udp_ports', 'backup_strategy', 'mount_point',
                 'usage_timeout', 'volume_support', 'device_path',
                 'service_manager', 'start_command', 'stop_command',
                 'port', 'config_dir', 'couchdb_user', 'couchdb_group',
                 'ignore_users', 'ignore_dbs', 'root_on_create'):
        assert name in names


def test_secrets_are_declared_secret():
    opts = {opt.name: opt for _group, group_opts in trove_cfg.list_opts()
            for opt in group_opts}
    assert opts['instance_rpc_encr_key'].secret


def _blocks(text):
    """The '# From trove.guestagent' blocks of a sample, section by section.

    Only this project's blocks are compared: the oslo.log and
    oslo.messaging blocks change with those libraries' versions.
    """
    blocks = []
    for section in text.split('\n['):
        head, _, body = section.partition('\n')
        for part in body.split('# From ')[1:]:
            if part.startswith('trove.guestagent'):
                blocks.append((head, part.strip()))
    return blocks


def test_committed_sample_matches_the_options(tmp_path):
    generated = tmp_path / 'sample.conf'
    subprocess.run(
        [sys.executable, '-m', 'oslo_config.generator',
         '--namespace', 'trove.guestagent', '--output-file',
         str(generated)], check=True, capture_output=True)
    ours = _blocks(generated.read_text())
    assert len(ours) == 3
    assert ours == _blocks(SAMPLE.read_text()), (
        'etc/trove/trove-guestagent.conf.sample is stale: run tox -e '
        'genconfig')


def _parsed(tmp_path, text):
    """A private ConfigOpts with the agent's options, read from ``text``."""
    path = tmp_path / 'guest.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    trove_cfg.register_opts(conf)
    conf(['--config-file', str(path)], project='trove',
         default_config_files=[])
    return conf


@pytest.mark.parametrize('value', ['swift', 'SwiftStorage', 'local'])
def test_start_up_check_accepts_every_storage_strategy_trove_wrote(
        tmp_path, value):
    conf = _parsed(tmp_path, '[DEFAULT]\nstorage_strategy = %s\n' % value)
    trove_cfg.check_options(conf)
    assert conf.storage_strategy == value


@pytest.mark.parametrize('value', ['ftp', 'swiftstorage', 'Swift'])
def test_start_up_check_refuses_other_storage_strategies(tmp_path, value):
    conf = _parsed(tmp_path, '[DEFAULT]\nstorage_strategy = %s\n' % value)
    with pytest.raises(exception.ConfigurationError) as refused:
        trove_cfg.check_options(conf)
    message = str(refused.value)
    assert '[DEFAULT] storage_strategy' in message
    assert "Valid values are [swift, SwiftStorage, local]" in message
    assert repr(value) in message


@pytest.mark.parametrize('engine,level', [('isal', 0), ('isal', 3),
                                          ('zlib', 9), ('zlib', 0)])
def test_start_up_check_accepts_each_engines_levels(tmp_path, engine, level):
    conf = _parsed(tmp_path, '[DEFAULT]\nbackup_compression_engine = %s\n'
                   'backup_compression_level = %s\n' % (engine, level))
    trove_cfg.check_options(conf)


def test_start_up_check_refuses_a_level_the_engine_does_not_know(tmp_path):
    conf = _parsed(tmp_path, '[DEFAULT]\nbackup_compression_level = 6\n')
    with pytest.raises(exception.ConfigurationError,
                       match=r'\[DEFAULT\] backup_compression_level: isal '
                             r'compression levels are 0-3, got 6'):
        trove_cfg.check_options(conf)


def test_start_up_check_refuses_an_unknown_engine(tmp_path):
    conf = _parsed(tmp_path, '[DEFAULT]\nbackup_compression_engine = igzip\n')
    with pytest.raises(exception.ConfigurationError,
                       match=r'backup_compression_engine'):
        trove_cfg.check_options(conf)


def test_start_up_check_names_the_group_of_a_refused_value(tmp_path):
    conf = _parsed(tmp_path, '[couchdb]\nport = not-a-port\n')
    with pytest.raises(exception.ConfigurationError,
                       match=r'\[couchdb\] port: .*not-a-port'):
        trove_cfg.check_options(conf)


def test_start_up_check_never_shows_a_secret_value(tmp_path, monkeypatch):
    conf = _parsed(tmp_path, '[DEFAULT]\npin = s3cr3t\n')
    pin = cfg.IntOpt('pin', secret=True)
    conf.register_opt(pin)
    monkeypatch.setattr(trove_cfg, 'list_opts', lambda: [(None, [pin])])
    with pytest.raises(exception.ConfigurationError) as refused:
        trove_cfg.check_options(conf)
    assert '[DEFAULT] pin' in str(refused.value)
    assert 's3cr3t' not in str(refused.value)
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__
