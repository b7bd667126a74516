"""Stand-ins for the OpenStack services this machine lacks, as Trove 26
loads them: ``remote_nova_client``, ``remote_cinder_client``,
``remote_neutron_client`` and ``remote_glance_client`` name these factories
in trove.conf (``integration/trove26/cloud.py`` puts this directory on
``sys.path``).  Nothing of Trove itself is replaced.

Nova: a server create writes a boot request (the name and the cloud-config
userdata Trove injects the guest's files with) into ``[DEFAULT]
nova_standin_dir``; the test's hypervisor (``integration/
test_trove26_replica.py``) boots a guest from it, a real CouchDB node and
our agent, and marks it ``.active``.  A delete asks the hypervisor to stop
it.  Flavors are the few below.  Cinder, Neutron and Glance answer only
what the flows run here ask of them (no volumes, no ports: trove.conf says
so), and say so when asked for more.
"""

import base64
import json
import pathlib
import types

import yaml

from novaclient import exceptions as nova_exceptions
from oslo_config import cfg

CONF = cfg.CONF
cfg.CONF.register_opts([cfg.StrOpt(
    'nova_standin_dir',
    help="Where the Nova stand-in hands boot and delete requests to the "
         "tests' hypervisor.")])

# Flavors as Nova lists them (RAM in MiB, disk in GiB).
FLAVORS = {'1': {'name': 'small', 'ram': 512, 'vcpus': 1, 'disk': 10,
                 'ephemeral': 0},
           '2': {'name': 'medium', 'ram': 1024, 'vcpus': 2, 'disk': 20,
                 'ephemeral': 0}}
ADDRESS = '127.0.0.1'


class NotHere(Exception):
    """A call the stand-ins do not serve: the flow asked for more than
    this machine has."""


def _dir():
    path = pathlib.Path(CONF.nova_standin_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Flavors:
    def get(self, flavor_id):
        flavor = FLAVORS.get(str(flavor_id))
        if flavor is None:
            raise nova_exceptions.NotFound(404, 'Flavor %s' % flavor_id)
        return types.SimpleNamespace(id=str(flavor_id), swap=0,
                                     to_dict=lambda: dict(flavor), **flavor)

    def list(self, *args, **kwargs):
        return [self.get(flavor_id) for flavor_id in FLAVORS]


class Server:
    """What Trove reads of a Nova server."""

    def __init__(self, server_id, status):
        self.id = server_id
        self.status = status
        self.addresses = {'private': [{'addr': ADDRESS, 'version': 4}]}
        self.networks = {'private': [ADDRESS]}
        self.fault = {'message': 'the guest did not boot'}
        self.flavor = {'id': '1'}
        setattr(self, 'OS-EXT-AZ:availability_zone', 'nova')
        setattr(self, 'OS-EXT-SRV-ATTR:host', 'standin')


def injected_files(userdata):
    """{path: content} of the files Trove's cloud-config writes."""
    config = yaml.safe_load(userdata or '') or {}
    files = {}
    for entry in config.get('write_files') or []:
        content = entry['content']
        if entry.get('encoding') == 'b64':
            content = base64.b64decode(content).decode('utf-8')
        files[entry['path']] = content
    return files


class Servers:
    def create(self, name, image, flavor, userdata=None, meta=None,
               **kwargs):
        server_id = 'server-%s' % (meta or {})['trove_instance_id']
        request = {'name': name, 'image': image, 'flavor': flavor,
                   'meta': meta, 'files': injected_files(userdata)}
        path = _dir() / ('%s.boot.json' % server_id)
        tmp = path.with_suffix('.tmp')
        tmp.write_text(json.dumps(request))
        tmp.rename(path)
        return Server(server_id, 'BUILD')

    def get(self, server_id):
        base = _dir() / server_id
        if base.with_suffix('.deleted').exists():
            raise nova_exceptions.NotFound(404, 'Not found')
        if base.with_suffix('.error').exists():
            return Server(server_id, 'ERROR')
        if base.with_suffix('.active').exists():
            return Server(server_id, 'ACTIVE')
        if (_dir() / ('%s.boot.json' % server_id)).exists():
            return Server(server_id, 'BUILD')
        raise nova_exceptions.NotFound(404, 'Not found')

    def delete(self, server_id):
        (_dir() / server_id).with_suffix('.delete').touch()

    def list(self, *args, **kwargs):
        return []


def nova_client(context, region_name=None, password=None):
    return types.SimpleNamespace(servers=Servers(), flavors=Flavors())


class _Refuses:
    """A client of a service this machine does not have."""

    def __init__(self, service):
        self._service = service

    def __getattr__(self, name):
        raise NotHere('%s stand-in: %s is not served here'
                      % (self._service, name))


def cinder_client(context, region_name=None):
    return _Refuses('Cinder')


class Neutron(_Refuses):
    """No ports here: trove.conf asks for none (no management network,
    no security groups), so a server has none."""

    def __init__(self):
        super().__init__('Neutron')

    def list_ports(self, **filters):
        return {'ports': []}

    def list_floatingips(self, **filters):
        return {'floatingips': []}


def neutron_client(context, region_name=None):
    return Neutron()


def glance_client(context, region_name=None):
    return _Refuses('Glance')
