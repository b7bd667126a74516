"""The option reference: every group exported, the sample kept current."""

import pathlib
import subprocess
import sys

from oslo_config import cfg

from trove.common import cfg as trove_cfg

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
