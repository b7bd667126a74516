"""The configuration templates an operator installs into Trove."""

import configparser
import json
import pathlib

import jinja2
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


def test_config_template_renders_for_a_flavor():
    text = jinja2.Template(
        (TEMPLATES / 'couchdb' / 'config.template').read_text()).render(
            flavor={'ram': 4096, 'vcpus': 2})
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert parser['couchdb']['max_dbs_open'] == '612'
    assert parser['log']['level'] == 'info'


@pytest.mark.parametrize('name', ['validation-rules.json',
                                  'validation-rules-1.6.json'])
def test_rules_load_as_trove_manage_loads_them(name):
    """trove-manage db_load_datastore_config_parameters stores name,
    restart_required, type, max and min of every entry, one row per name."""
    entries = json.loads((TEMPLATES / 'couchdb' / name).read_text())[
        'configuration-parameters']
    names = [entry['name'] for entry in entries]
    assert len(names) == len(set(names))
    for entry in entries:
        assert set(entry) <= {'name', 'restart_required', 'type', 'min',
                              'max'}, entry
        assert isinstance(entry['restart_required'], bool), entry
        assert entry['type'] in ('integer', 'float', 'boolean', 'string')
