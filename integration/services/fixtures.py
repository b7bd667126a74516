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
"""Pytest fixtures of the service controllers, to import into a conftest.

``from integration.services.fixtures import swift  # noqa: F401`` makes
the fixture available where it is imported.  A service that is not
installed fails the test with what to run; it is never skipped.
"""

import pytest

from integration.services import base
from integration.services.swift import SwiftCluster


def start_or_fail(service):
    """Start a service; a missing one fails the test (never a skip)."""
    try:
        return service.start()
    except base.ServiceNotInstalled as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


def swift_fixture(tmp_path_factory):
    """A Swift cluster for the whole session (see SwiftCluster)."""
    cluster = SwiftCluster(tmp_path_factory.mktemp("swift"))
    try:
        yield start_or_fail(cluster)
    finally:
        cluster.stop()


swift = pytest.fixture(scope="session", name="swift")(swift_fixture)
