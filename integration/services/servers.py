# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.
"""The two CouchDB servers an agent is tested against.

``couchdb3``: the real Apache CouchDB 3.5 every guest runs (the default);
``pouchdb``: pouchdb-server, which speaks CouchDB 1.6's API (upstream
Trove's old backups are 1.6 data directories).  Both controllers offer
``url``, ``port``, ``data_dir``, ``config_dir`` (None when the server reads
no ini file), ``server_log``, ``api_version``, ``datastore_version``,
``start_command(pid_file, log, wait)``, ``stop_command(pid_file)`` and
``stop()``.
"""

from integration.services import couchdb3
from integration.services import pouchdb

SERVERS = {
    "couchdb3": couchdb3.CouchDB3Server,
    "pouchdb": pouchdb.PouchDBServer,
}
KINDS = tuple(SERVERS)


def make_server(kind, workdir):
    """A controller of ``kind`` with its files under ``workdir``."""
    return SERVERS[kind](workdir)


def only_on(*kinds):
    """Mark a test that only these servers can show (e.g. what only a
    real CouchDB 3.x does): it runs on them alone."""
    import pytest
    return pytest.mark.parametrize('server_kind', kinds, scope='session')
