"""The agent's exceptions: one root, typed subclasses that carry context.

Exceptions raised by an RPC endpoint travel back to the caller through
oslo.messaging, which re-creates them on the caller's side when their module
is in the client's allowed list (Trove allows ``trove.common.exception``).
Each class therefore keeps a readable ``message`` and a stable name.
"""


class TroveError(Exception):
    """Root of every error this project raises on purpose."""

    message = "An unknown error occurred."

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.message % kwargs
            except (KeyError, TypeError, ValueError):
                message = self.message
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


class BadRequest(TroveError):
    message = "The request is invalid."


class BadValue(BadRequest):
    message = "Value could not be converted: %(msg)s"


class InvalidName(BadRequest):
    """A database or user name that CouchDB or this agent refuses."""

    message = "Invalid %(kind)s name '%(name)s': %(reason)s."


class ReservedName(InvalidName):
    message = "The %(kind)s name '%(name)s' is reserved and cannot be used."


class NotFound(TroveError):
    message = "Resource %(uuid)s cannot be found."


class DatabaseNotFound(NotFound):
    message = "Database '%(name)s' does not exist."


class UserNotFound(NotFound):
    message = "User '%(name)s' does not exist."


class DatabaseAlreadyExists(BadRequest):
    message = "Database '%(name)s' already exists."


class UserAlreadyExists(BadRequest):
    message = "User '%(name)s' already exists."


class DatastoreOperationNotSupported(TroveError):
    """Raised for a guest API call this datastore does not implement.

    Same name and message shape as Trove's own exception, so a Trove API
    server reports it as "not supported" to the user.
    """

    message = ("The '%(operation)s' operation is not supported for "
               "the '%(datastore)s' datastore.")


class ConfigurationError(TroveError):
    message = "Configuration error: %(reason)s"


class ProcessExecutionError(TroveError):
    """A command exited non-zero, timed out or could not start."""

    message = "%(description)s"

    def __init__(self, message=None, cmd=None, exit_code=None, stdout='',
                 stderr='', description=None):
        self.cmd = cmd
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        if message is None:
            message = "%s exited with %s%s" % (
                description or (cmd[0] if cmd else 'command'), exit_code,
                (": %s" % stderr.strip()[-500:]) if stderr else "")
        super().__init__(message)


class GuestError(TroveError):
    message = ("An error occurred communicating with the guest: "
               "%(original_message)s.")


class GuestTimeout(TroveError):
    message = "Timeout trying to connect to the guest agent."


class CouchDBError(TroveError):
    """CouchDB answered with an error or could not be reached.

    Carries the HTTP method, the request path (never with credentials), the
    status code and CouchDB's own ``error``/``reason`` fields.
    """

    message = "CouchDB error"

    def __init__(self, message=None, method=None, path=None, status=None,
                 error=None, reason=None):
        self.method = method
        self.path = path
        self.status = status
        self.error = error
        self.reason = reason
        if message is None:
            message = "CouchDB %s %s failed" % (method, path)
            if status is not None:
                message += " with HTTP %s" % status
            if error or reason:
                message += ": %s" % ": ".join(
                    str(x) for x in (error, reason) if x)
        super().__init__(message)


class CouchDBUnavailable(CouchDBError):
    """CouchDB did not answer at all (connection refused, timeout)."""


class CouchDBAuthError(CouchDBError):
    """CouchDB refused the agent's credentials (HTTP 401/403)."""


class CouchDBConflict(CouchDBError):
    """A document update lost a race (HTTP 409)."""


class VolumeError(TroveError):
    message = "Volume operation failed: %(reason)s"


class GuestStateError(TroveError):
    message = "%(reason)s"


class ReplicationError(TroveError):
    """Replication cannot be set up, changed or waited for."""

    message = "Replication: %(reason)s"
