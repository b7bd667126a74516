"""A tenant's databases, users and root through trove-api's own controllers.

The controllers of ``trove/extensions/common/service.py`` (what
``openstack database db create``, ``user create``, ``user grant access``,
``root enable`` reach) run in Trove 26's control plane
(``integration/trove26/cloud.py``, the Trove 26 venv with this project's
patch series) against an instance Trove created: a real CouchDB 3.5 node
and our agent, booted by the hypervisor of test_trove26_replica.py.  Stock
Trove 26 answers each of them "Operation not supported for datastore
couchdb" (patch 0002 of contrib/trove-26.0.0).  Each answer is checked as
the tenant sees it (the API's body) and in CouchDB itself.
"""

import requests

from integration.scenario import control_plane
from integration.test_trove26_replica import ALICE
from integration.test_trove26_replica import server_kind  # noqa: F401
from integration.test_trove26_replica import trove_cloud  # noqa: F401


def _wait(predicate, what, timeout=60):
    return control_plane.wait_until(predicate, timeout, what, interval=0.5)


def _ok(answer, status):
    assert answer.get('status') == status, answer
    return answer['body']


def test_databases_users_and_root_through_trove_api(trove_cloud):  # noqa: F811
    cloud = trove_cloud
    created = cloud.call('create_instance', name='c', databases=['shop'],
                         users=[ALICE])
    instance_id = created['id']
    cloud.active(instance_id)
    guest = cloud.hypervisor.guests['server-' + instance_id]

    def api(controller, action, **kwargs):
        return cloud.call('api', controller=controller, action=action,
                          instance_id=instance_id, **kwargs)

    def databases():
        body = _ok(api('databases', 'index'), 200)
        return sorted(db['name'] for db in body['databases'])

    def users():
        body = _ok(api('users', 'index'), 200)
        return {u['name']: sorted(d['name'] for d in u['databases'])
                for u in body['users']}

    def logs_in(name, password):
        return requests.get(guest.url('_session'), auth=(name, password),
                            timeout=10).json().get('userCtx', {}).get('name')

    # Databases: list, create, delete.
    assert databases() == ['shop']
    _ok(api('databases', 'create',
            body={'databases': [{'name': 'orders'}]}), 202)
    _wait(lambda: databases() == ['orders', 'shop'], 'orders listed')
    admin = guest.admin_session()
    assert admin.get(guest.url('orders'), timeout=10).status_code == 200

    # Users: list, create with access, show, password, grant, revoke.
    assert users() == {'alice': ['shop']}
    _ok(api('users', 'create', body={'users': [
        {'name': 'bob', 'password': 'bob-pw-1',
         'databases': [{'name': 'orders'}]}]}), 202)
    _wait(lambda: users().get('bob') == ['orders'], 'bob listed')
    assert logs_in('bob', 'bob-pw-1') == 'bob'
    shown = _ok(api('users', 'show', id='bob'), 200)['user']
    assert shown['name'] == 'bob' and [d['name'] for d in
                                       shown['databases']] == ['orders']
    _ok(api('users', 'update_all', body={'users': [
        {'name': 'bob', 'password': 'bob-pw-2'}]}), 202)
    _wait(lambda: logs_in('bob', 'bob-pw-2') == 'bob', 'the new password')
    assert logs_in('bob', 'bob-pw-1') is None
    _ok(api('user_access', 'update', user_id='bob',
            body={'databases': [{'name': 'shop'}]}), 202)
    _wait(lambda: users().get('bob') == ['orders', 'shop'], 'bob on shop')
    bob = guest.session('bob', 'bob-pw-2')
    assert bob.get(guest.url('shop', '_all_docs'), timeout=10).ok
    access = _ok(api('user_access', 'index', user_id='bob'), 200)
    assert sorted(d['name'] for d in access['databases']) == [
        'orders', 'shop']
    _ok(api('user_access', 'delete', user_id='bob', id='orders'), 202)
    _wait(lambda: users().get('bob') == ['shop'], 'bob off orders')
    assert bob.get(guest.url('orders', '_all_docs'),
                   timeout=10).status_code == 403

    # Root: shown off, enabled (a server admin of CouchDB), disabled.
    assert _ok(api('root', 'index'), 200) == {'rootEnabled': False}
    root = _ok(api('root', 'create'), 200)['user']
    assert root['name'] == 'root' and root['password']
    assert admin.get(guest.url('_all_dbs'),
                     auth=('root', root['password']),
                     timeout=10).status_code == 200
    assert _ok(api('root', 'index'), 200) == {'rootEnabled': True}
    assert api('root', 'delete').get('status') == 204
    _wait(lambda: requests.get(guest.url('_all_dbs'),
                               auth=('root', root['password']),
                               timeout=10).status_code == 401,
          'root refused after disable')

    # A name Trove's API accepts and CouchDB refuses: the tenant sees the
    # guest's error as a fault of the instance; nothing is created.
    _ok(api('databases', 'create',
            body={'databases': [{'name': 'Orders'}]}), 202)
    fault = _wait(lambda: cloud.call('instances')[instance_id]['faults'],
                  'the fault of the refused database')
    assert any('Orders' in message for message in fault), fault
    assert databases() == ['orders', 'shop']

    # Delete: a user, a database.
    _ok(api('users', 'delete', id='bob'), 202)
    _wait(lambda: 'bob' not in users(), 'bob deleted')
    assert logs_in('bob', 'bob-pw-2') is None
    _ok(api('databases', 'delete', id='orders'), 202)
    _wait(lambda: databases() == ['shop'], 'orders deleted')
    assert admin.get(guest.url('orders'), timeout=10).status_code == 404
