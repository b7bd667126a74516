"""root_actions: ``trove root-enable/show/disable``."""

from integration.scenario.runners import base

REFUSED = (401, 403)


class RootActionsRunner(base.TestRunner):

    def _root(self, password):
        return self.helper.create_client(self.instance.couchdb.url, 'root',
                                         password)

    def _is_admin(self, password):
        """Whether root with ``password`` may read the server's admins."""
        root = self._root(password)
        return root.status('GET', *root.config('admins')) == 200

    def run_check_root_never_enabled(self):
        assert self.instance.api.is_root_enabled() is False
        assert self.instance.api.get_root_password() is None

    def run_enable_root(self):
        root = self.instance.api.enable_root()
        assert root['_name'] == 'root', root
        assert len(root['_password'] or '') >= 16, 'a weak root password'
        self.password = root['_password']
        assert self._is_admin(self.password)

    def run_check_root_enabled(self):
        assert self.instance.api.is_root_enabled() is True
        assert self.instance.api.get_root_password() == self.password

    def run_enable_root_with_password(self):
        chosen = self.helper.get_helper_credentials_root()['password']
        self.instance.api.enable_root_with_password(chosen)
        assert self._is_admin(chosen)
        assert not self._is_admin(self.password), 'the old password works'
        self.password = chosen

    def run_root_administers_the_server(self):
        root = self._root(self.password)
        root.request('PUT', 'scenario_root_db')
        root.request('DELETE', 'scenario_root_db')

    def run_disable_root(self):
        self.instance.api.disable_root()
        assert self.instance.api.is_root_enabled() is False
        root = self._root(self.password)
        assert root.status('GET', *root.config('admins')) in REFUSED
