"""The manager registry: built-in managers and datastore_registry_ext."""

import pytest

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import manager
from trove.guestagent import dbaas


def test_couchdb_is_registered():
    assert dbaas.manager_class('couchdb') is manager.Manager


def test_registry_ext_adds_and_overrides(conf):
    conf.config(datastore_registry_ext={
        'couchdb': 'trove.guestagent.datastore.manager.Manager',
        'other': 'trove.guestagent.datastore.experimental.couchdb.'
                 'manager.Manager'})
    from trove.guestagent.datastore import manager as base
    assert dbaas.manager_class('couchdb') is base.Manager
    assert dbaas.manager_class('other') is manager.Manager


def test_unknown_manager_is_a_clear_error():
    with pytest.raises(exception.ConfigurationError) as err:
        dbaas.manager_class('mysql')
    assert "'mysql' is not registered" in str(err.value)


def test_unloadable_manager_is_a_clear_error(conf):
    conf.config(datastore_registry_ext={'couchdb': 'no.such.Manager'})
    with pytest.raises(exception.ConfigurationError) as err:
        dbaas.manager_class('couchdb')
    assert 'no.such.Manager' in str(err.value)
