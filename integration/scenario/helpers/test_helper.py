"""What the scenario runners ask of a datastore, in Trove's helper style.

Trove's scenario tests keep everything datastore-specific in a helper
class: how to reach an instance as a tenant would, how to put a known set
of data there and check it later, which names and configuration values are
valid.  The runners only ever speak in these terms, so the same steps read
the same for any datastore.

Data comes in named sets (``DataType``): each is a label, a first index and
a size.  ``add_data(DataType.small, host)`` writes the ``small`` set,
``verify_data`` checks that exactly that set is there, value for value,
``verify_data_absent`` that none of it is, ``remove_data`` removes it.
"""

import enum


class DataType(enum.Enum):
    """Named data sets, as (first index, number of items)."""

    micro = (100, 10)
    micro2 = (200, 10)
    micro3 = (300, 10)
    tiny = (1000, 100)
    tiny2 = (2000, 100)
    tiny3 = (3000, 100)
    small = (10000, 1000)
    large = (100000, 5000)

    @property
    def start(self):
        return self.value[0]

    @property
    def size(self):
        return self.value[1]


class TestHelper:
    """The datastore-independent half; subclasses implement the rest."""

    __test__ = False      # not a pytest test class

    # What a datastore helper provides.
    def create_client(self, host, username, password):
        """A client on ``host`` (an instance's URL) as that user."""
        raise NotImplementedError

    def get_helper_credentials(self):
        """The helper user: ``name``, ``password``, ``database``."""
        raise NotImplementedError

    def get_helper_credentials_root(self):
        """The root user the scenarios enable: ``name``, ``password``."""
        raise NotImplementedError

    def add_actual_data(self, client, label, start, size):
        raise NotImplementedError

    def verify_actual_data(self, client, label, start, size):
        raise NotImplementedError

    def count_actual_data(self, client, label):
        raise NotImplementedError

    def remove_actual_data(self, client, label, start, size):
        raise NotImplementedError

    # What the runners call.
    def helper_client(self, host):
        creds = self.get_helper_credentials()
        return self.create_client(host, creds['name'], creds['password'])

    def root_client(self, host):
        creds = self.get_helper_credentials_root()
        return self.create_client(host, creds['name'], creds['password'])

    def add_data(self, data_type, host):
        self.add_actual_data(self.helper_client(host), data_type.name,
                             data_type.start, data_type.size)

    def verify_data(self, data_type, host):
        self.verify_actual_data(self.helper_client(host), data_type.name,
                                data_type.start, data_type.size)

    def verify_data_absent(self, data_type, host):
        found = self.count_actual_data(self.helper_client(host),
                                       data_type.name)
        if found:
            raise AssertionError('%d items of the %s data set are on %s; '
                                 'none should be' % (found, data_type.name,
                                                     host))

    def remove_data(self, data_type, host):
        self.remove_actual_data(self.helper_client(host), data_type.name,
                                data_type.start, data_type.size)
