"""One HTTP client for the CouchDB 1.6 and 3.x APIs.

Everything the agent asks CouchDB goes through :class:`CouchDBClient`: one
``requests.Session`` per client, an explicit timeout on every request, every
path segment URL-quoted, credentials only in the session's Authorization
header.  HTTP errors become the typed exceptions of
``trove.common.exception`` carrying the method, the path (never credentials),
the status and CouchDB's own ``error``/``reason``.

The two API generations differ in a few paths (``/_config`` against
``/_node/_local/_config``, ``/_restart`` against ``/_node/_local/_restart``)
and in how health is read (``GET /`` against ``GET /_up``).  With
``api_version='auto'`` the client probes the server the first time it needs to
know, and probes again after the server was unreachable.
"""

import enum
import itertools
import json as jsonlib
import time
from urllib import parse

import requests
from oslo_log import log as logging

from trove.common import cfg
from trove.common import exception

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

API_AUTO = 'auto'
API_V1 = '1'
API_V3 = '3'
_API_VERSIONS = (API_AUTO, API_V1, API_V3)

# Bodies of a 404 from GET /_up when a 2.x/3.x node is up but not serving.
_NOT_READY_STATUSES = frozenset(('maintenance_mode', 'nolb', 'seeding'))
# Query parameters that CouchDB reads as JSON values.
_JSON_PARAMS = frozenset(('key', 'keys', 'startkey', 'endkey', 'start_key',
                          'end_key'))
# Config keys whose change makes the server restart its HTTP listener.
_LISTENER_KEYS = frozenset((('httpd', 'bind_address'),
                            ('chttpd', 'bind_address')))
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout,
                     requests.exceptions.ChunkedEncodingError)


class Health(enum.Enum):
    """What CouchDB's health endpoint says, seen from the agent."""

    UP = 'up'
    NOT_READY = 'not_ready'
    DOWN = 'down'


def quote_segment(segment):
    """Quote one raw path segment: 'a/b' -> 'a%2Fb'."""
    return parse.quote(str(segment), safe='')


def build_path(segments):
    """A request path from raw segments, or a constant path as given."""
    if isinstance(segments, str):
        if not segments.startswith('/'):
            raise ValueError("A constant path must start with '/': %r"
                             % segments)
        return segments
    return '/' + '/'.join(quote_segment(s) for s in segments)


def query_params(**options):
    """Encode view/_all_docs options the way CouchDB reads them.

    ``startkey`` and its kin are JSON values (``"org.couchdb.user:"`` with the
    quotes); booleans are ``true``/``false``; everything else is a string.
    """
    params = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in _JSON_PARAMS:
            params[name] = jsonlib.dumps(value)
        elif isinstance(value, bool):
            params[name] = 'true' if value else 'false'
        else:
            params[name] = str(value)
    return params


def polling_loop(timeout, interval=1.0):
    """Yield attempt numbers until ``timeout`` seconds have passed.

    The first attempt comes at once and the last one at the deadline, with
    ``interval`` seconds between two attempts.
    """
    deadline = time.monotonic() + timeout
    for attempt in itertools.count():
        yield attempt
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(interval, remaining))


def _anonymous(request):
    """requests auth hook that sends a request without credentials."""
    request.headers.pop('Authorization', None)
    return request


def _decode(response):
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _checked(method, path, status, body, expected=None):
    """Return ``body`` when ``status`` is expected, else raise typed."""
    if expected is None:
        ok = 200 <= status < 300
    elif isinstance(expected, int):
        ok = status == expected
    else:
        ok = status in expected
    if ok:
        return body
    error = reason = None
    if isinstance(body, dict):
        error, reason = body.get('error'), body.get('reason')
    if status in (401, 403):
        cls = exception.CouchDBAuthError
    elif status == 409:
        cls = exception.CouchDBConflict
    else:
        cls = exception.CouchDBError
    raise cls(method=method, path=path, status=status, error=error,
              reason=reason)


def _not_ready_body(body):
    return isinstance(body, dict) and body.get('status') in _NOT_READY_STATUSES


class CouchDBClient:
    """A CouchDB server seen through its HTTP API, as one user."""

    def __init__(self, base_url, username=None, password=None, timeout=None,
                 api_version=API_AUTO):
        api_version = str(api_version)
        if api_version not in _API_VERSIONS:
            raise ValueError("api_version must be one of %s, not %r"
                             % (', '.join(_API_VERSIONS), api_version))
        if parse.urlsplit(base_url).username is not None:
            raise ValueError("Credentials go in username/password, never "
                             "in the URL.")
        self.base_url = base_url.rstrip('/')
        self.username = username
        self.timeout = (CONF.couchdb.http_timeout if timeout is None
                        else timeout)
        self._configured_version = api_version
        self._version = None if api_version == API_AUTO else api_version
        self._session = requests.Session()
        # No proxies from the environment, no ~/.netrc credentials.
        self._session.trust_env = False
        self._session.headers['Accept'] = 'application/json'
        if username is not None:
            self._session.auth = (username, password or '')

    def __repr__(self):
        return '<CouchDBClient %s as %s>' % (self.base_url,
                                             self.username or 'anonymous')

    def close(self):
        self._session.close()

    def with_credentials(self, username, password):
        """A new client for another user, same server and API version."""
        other = CouchDBClient(self.base_url, username, password,
                              timeout=self.timeout,
                              api_version=self._configured_version)
        other._version = self._version
        return other

    # -- transport --------------------------------------------------------

    def _send(self, method, path, params=None, json=None, data=None,
              auth=True, headers=None):
        """One HTTP exchange: (status, decoded body) or CouchDBUnavailable."""
        LOG.debug("CouchDB request %s %s", method, path)
        kwargs = {'params': params, 'data': data, 'headers': headers,
                  'timeout': self.timeout}
        if json is not None:
            kwargs['json'] = json
        if not auth:
            kwargs['auth'] = _anonymous
        try:
            response = self._session.request(method, self.base_url + path,
                                             **kwargs)
        except _TRANSPORT_ERRORS as exc:
            self._forget_version()
            raise exception.CouchDBUnavailable(
                method=method, path=path,
                reason='%s: %s' % (type(exc).__name__, exc)) from exc
        return response.status_code, _decode(response)

    def _call(self, method, path, expected=None, **kwargs):
        status, body = self._send(method, path, **kwargs)
        return _checked(method, path, status, body, expected)

    def request(self, method, segments, params=None, json=None, data=None,
                expected=None, auth=True):
        """Send one request and return its decoded JSON body.

        ``segments`` is a list of raw path segments, quoted here, or a
        constant path such as ``'/_all_dbs'``.  ``expected`` is a status or a
        collection of statuses (default: any 2xx); any other answer raises.
        """
        return self._call(method, build_path(segments), expected=expected,
                          params=params, json=json, data=data, auth=auth)

    def get_or_none(self, segments, params=None):
        """GET a resource; None when CouchDB answers 404."""
        path = build_path(segments)
        status, body = self._send('GET', path, params=params)
        if status == 404:
            return None
        return _checked('GET', path, status, body)

    def exists(self, segments):
        """HEAD a resource: True when it exists, False on 404."""
        path = build_path(segments)
        status, body = self._send('HEAD', path)
        if status == 404:
            return False
        _checked('HEAD', path, status, body)
        return True

    def all_docs(self, db, **options):
        """GET /{db}/_all_docs with JSON-encoded key options."""
        return self.request('GET', [db, '_all_docs'],
                            params=query_params(**options))

    def _drop_connections(self):
        for adapter in self._session.adapters.values():
            adapter.close()

    # -- API version ------------------------------------------------------

    @property
    def api_version(self):
        """'1' or '3'; probes the server once when configured 'auto'."""
        if self._version is None:
            self._version = self._detect_version()
            LOG.debug("CouchDB at %s speaks API version %s", self.base_url,
                      self._version)
        return self._version

    def _forget_version(self):
        if self._configured_version == API_AUTO:
            self._version = None

    def _detect_version(self):
        status, body = self._send('GET', '/_up', auth=False)
        if status == 200 or (status == 404 and _not_ready_body(body)):
            return API_V3
        status, body = self._probe_root()
        if status == 200 and isinstance(body, dict) and body.get('version'):
            return API_V1
        raise exception.CouchDBError(
            method='GET', path='/', status=status,
            reason='the server answers neither GET /_up (CouchDB 2.x/3.x) '
                   'nor GET / with a version (CouchDB 1.x)')

    def _probe_root(self):
        """GET / anonymously, then with credentials if refused."""
        status, body = self._send('GET', '/', auth=False)
        if status in (401, 403) and self.username is not None:
            status, body = self._send('GET', '/')
        return status, body

    # -- health -----------------------------------------------------------

    def health(self):
        """Whether CouchDB is UP, NOT_READY or DOWN; never raises."""
        try:
            if self.api_version == API_V3:
                return self._health_v3()
            return self._health_v1()
        except exception.CouchDBUnavailable:
            return Health.DOWN
        except exception.CouchDBError as exc:
            LOG.debug("CouchDB is not ready: %s", exc)
            return Health.NOT_READY

    def _health_v3(self):
        status, _body = self._send('GET', '/_up', auth=False)
        return Health.UP if status == 200 else Health.NOT_READY

    def _health_v1(self):
        status, body = self._send('GET', '/', auth=False)
        if status < 500 and isinstance(body, (dict, list)):
            return Health.UP
        return Health.NOT_READY

    # -- server -----------------------------------------------------------

    def server_info(self):
        return self.request('GET', '/')

    def all_dbs(self):
        return self.request('GET', '/_all_dbs')

    def session_info(self):
        """GET /_session: who CouchDB thinks this client is."""
        return self.request('GET', '/_session')

    def restart_server(self):
        path = ('/_restart' if self.api_version == API_V1
                else '/_node/_local/_restart')
        try:
            return self._call('POST', path, json={})
        finally:
            self._drop_connections()
            self._forget_version()

    # -- configuration ----------------------------------------------------

    def _config_segments(self, section=None, key=None):
        if key is not None and section is None:
            raise ValueError("A config key needs its section.")
        prefix = (['_config'] if self.api_version == API_V1
                  else ['_node', '_local', '_config'])
        return prefix + [part for part in (section, key) if part is not None]

    def config_get(self, section=None, key=None):
        """The whole config, one section (dict) or one value (str)."""
        return self.request('GET', self._config_segments(section, key))

    def config_set(self, section, key, value):
        """Set one config value (a string); return the previous value."""
        if not isinstance(value, str):
            raise TypeError("CouchDB config values are strings, not %s"
                            % type(value).__name__)
        segments = self._config_segments(section, key)
        if (section, key) in _LISTENER_KEYS:
            return self._set_listener_option(segments, value)
        return self.request('PUT', segments, json=value)

    def config_delete(self, section, key, missing_ok=False):
        """Delete one config value; return the value it had."""
        path = build_path(self._config_segments(section, key))
        status, body = self._send('DELETE', path)
        if status == 404 and missing_ok:
            return None
        return _checked('DELETE', path, status, body)

    def _set_listener_option(self, segments, value):
        """PUT a value whose change restarts the server's HTTP listener.

        The server may drop the reply while it rebinds, so the request goes
        on its own connection, no pooled connection survives it, and a
        dropped reply is checked by reading the value back.
        """
        path = build_path(segments)
        old = self.get_or_none(segments)
        try:
            self._call('PUT', path, json=value,
                       headers={'Connection': 'close'})
        except exception.CouchDBUnavailable:
            LOG.debug("No reply to PUT %s; reading the value back", path)
            self._drop_connections()
            self._check_value(segments, value)
        finally:
            self._drop_connections()
        return old

    def _check_value(self, segments, value):
        path = build_path(segments)
        current = None
        for _attempt in polling_loop(self.timeout, 0.2):
            try:
                current = self.get_or_none(segments)
                break
            except exception.CouchDBUnavailable:
                continue
        else:
            raise exception.CouchDBUnavailable(
                method='GET', path=path,
                reason='the server did not come back after a listener '
                       'change')
        if current != value:
            raise exception.CouchDBError(
                method='PUT', path=path,
                reason='the reply was lost and the value read back is %r'
                       % current)
