"""``trove-guestagent``: the CouchDB guest agent's process.

Run by systemd on the guest as
``trove-guestagent --config-dir=/etc/trove/conf.d``.
"""

import sys

from oslo_config import cfg
from oslo_log import log as logging

from trove.common import cfg as trove_cfg
from trove.common import exception
from trove import rpc

CONF = cfg.CONF
LOG = logging.getLogger('trove.cmd.guest')


def _fail(message):
    sys.stderr.write("trove-guestagent: %s\n" % message)
    return 2


def _load_manager():
    from trove.guestagent import dbaas
    if not CONF.guest_id:
        raise exception.ConfigurationError(
            reason="guest_id is not set: Trove injects it in "
                   "/etc/trove/conf.d/guest_info.conf")
    if not CONF.datastore_manager:
        raise exception.ConfigurationError(
            reason="datastore_manager is not set")
    return dbaas.manager_class(CONF.datastore_manager)


def main(argv=None):
    trove_cfg.register_opts()
    logging.register_options(CONF)
    rpc.set_defaults(control_exchange='trove')
    try:
        CONF(sys.argv[1:] if argv is None else argv, project='trove',
             prog='trove-guestagent')
    except cfg.Error as exc:
        return _fail(exc)
    logging.setup(CONF, 'trove-guestagent')
    try:
        trove_cfg.check_options()
        manager_cls = _load_manager()
    except exception.ConfigurationError as exc:
        return _fail(exc)
    from oslo_service import service
    from trove.common.rpc import service as rpc_service
    manager = manager_cls()
    server = rpc_service.GuestService(manager, CONF.guest_id,
                                      CONF.instance_rpc_encr_key)
    LOG.info("Starting the %s guest agent for instance %s.",
             CONF.datastore_manager, CONF.guest_id)
    launcher = service.launch(CONF, server, restart_method='mutate')
    return launcher.wait() or 0


if __name__ == '__main__':
    sys.exit(main())
