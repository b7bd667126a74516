"""The configuration templates an operator installs into Trove."""

import configparser
import pathlib

import pytest

TEMPLATES = pathlib.Path(__file__).parents[2] / 'trove' / 'templates'


@pytest.mark.parametrize('name', ['replica.config.template',
                                  'replica_source.config.template'])
def test_replication_templates_are_ini_files(name):
    parser = configparser.ConfigParser(inline_comment_prefixes=(';',))
    parser.read_string((TEMPLATES / 'couchdb' / name).read_text())
    for section in parser.sections():
        assert parser[section], section


def test_replica_template_tunes_the_replicator():
    parser = configparser.ConfigParser()
    parser.read_string(
        (TEMPLATES / 'couchdb' / 'replica.config.template').read_text())
    assert int(parser['replicator']['worker_processes']) >= 1
    assert int(parser['replicator']['checkpoint_interval']) > 0
