"""Constants of the CouchDB datastore."""

MANAGER = 'couchdb'

ADMIN_USER = 'os_admin'
ROOT_USER = 'root'

USER_DOC_PREFIX = 'org.couchdb.user:'
USERS_DB = '_users'
REPLICATOR_DB = '_replicator'
GLOBAL_CHANGES_DB = '_global_changes'
SYSTEM_DBS_3X = (USERS_DB, REPLICATOR_DB, GLOBAL_CHANGES_DB)

# The longest database name CouchDB accepts.
MAX_DB_NAME_LENGTH = 238
# User names are kept short and plain: Trove's API caps them at 16
# characters for MySQL, other clients (the CLI, Horizon) at 64.
MAX_USER_NAME_LENGTH = 64

ADMIN_CREDENTIALS_FILE = 'couchdb-os_admin.json'

# Replication: the user a master hands to its replicas, the role that
# marks it, the design document guarding every replicated database, the
# _security field that makes a database read-only, the agent's state file.
REPLICATION_STRATEGY = 'CouchDBReplication'
REPLICATION_USER = 'os_replicator'
REPLICATION_ROLE = 'trove_replicator'
GUARD_DDOC_ID = '_design/trove_replication'
READ_ONLY_FIELD = 'trove_read_only'
REPLICATOR_DOC_PREFIX = 'trove-'
REPLICATION_STATE_FILE = 'couchdb-replication.json'
# The database through which a source and its replicas talk: what the
# source publishes (its databases, their _security, its users) and the
# replicas' registrations.  The agent's own: reserved, hidden from the
# tenant's database lists and never replicated.
REPLICATION_DB = 'trove_replication'
# Databases of the agent, whatever [couchdb] ignore_dbs says.
AGENT_DBS = (REPLICATION_DB,)
