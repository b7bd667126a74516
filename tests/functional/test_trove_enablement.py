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
"""The Trove 26 patch series of contrib/trove-26.0.0, on Trove's own code.

tools/bootstrap installs trove==26.0.0 from PyPI in .cache/trove26-venv and
applies the series there.  ``trove26/enablement.py`` runs with that venv's
python (its ``trove`` package would shadow ours) on a throwaway Trove
database holding two tenants' backups and reports what Trove did; these
tests judge it.  Stock Trove 26 fails the ones without an id or snapshot:
it deletes every full backup the tenant's context can load (an admin's:
every tenant's), incrementals included, then faults.  The others show
that a real delete still deletes.  The series' own Trove unit tests run
in the same venv.  A missing venv fails the tests; nothing is skipped.
"""

import json
import os
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TROVE26_PYTHON = REPO / '.cache' / 'trove26-venv' / 'bin' / 'python'
CHECKS = REPO / 'tests' / 'functional' / 'trove26' / 'enablement.py'
SERIES = REPO / 'contrib' / 'trove-26.0.0'
TIMEOUT = 120 * float(os.environ.get('TEST_TIMEOUT_FACTOR', '1.0'))


def trove26(args, workdir):
    """Run the Trove 26 venv's python in ``workdir``."""
    if not TROVE26_PYTHON.exists():
        pytest.fail("%s missing: run tools/bootstrap (it installs "
                    "trove==26.0.0 there and applies %s)"
                    % (TROVE26_PYTHON, SERIES.relative_to(REPO)),
                    pytrace=False)
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME')}
    return subprocess.run([str(TROVE26_PYTHON), *map(str, args)],
                          cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


def check(name, who, workdir):
    """What Trove did in check ``name`` (see enablement.py)."""
    proc = trove26([CHECKS, name, who], workdir)
    if proc.returncode != 0:
        log = workdir / 'trove26.log'
        pytest.fail("enablement.py %s %s failed (exit %s)\nstderr: %s\n"
                    "--- Trove 26 log:\n%s" % (
                        name, who, proc.returncode, proc.stderr[-4000:],
                        log.read_text()[-4000:] if log.exists() else ''),
                    pytrace=False)
    return json.loads(proc.stdout.splitlines()[-1])


def what_was_deleted(result):
    return {'casts': result['casts'], 'deleted rows': result['deleted_rows'],
            'Swift objects gone': result['objects_gone']}


NOTHING = {'casts': [], 'deleted rows': [], 'Swift objects gone': []}


@pytest.mark.parametrize('who', ['tenant', 'admin'])
def test_deleting_a_backup_without_an_id_deletes_nothing(tmp_path, who):
    result = check('delete-without-id', who, tmp_path)

    assert what_was_deleted(result) == NOTHING
    assert result['error'] == ('NotFound: Cannot delete a backup without a '
                               'backup id.')


def test_deleting_a_full_backup_still_deletes_its_incremental(tmp_path):
    result = check('delete-full', 'tenant', tmp_path)

    assert result['error'] is None, result['traceback']
    assert what_was_deleted(result) == {
        'casts': ['full', 'incremental'],
        'deleted rows': ['full', 'incremental'],
        'Swift objects gone': ['full', 'incremental']}


@pytest.mark.parametrize('who', ['tenant', 'admin'])
def test_a_replica_of_a_source_that_needs_no_backup_deletes_nothing(
        tmp_path, who):
    result = check('replica-without-snapshot', who, tmp_path)

    assert what_was_deleted(result) == NOTHING
    assert result['error'] is None, result['traceback']
    assert result['replicas_created'] == [{'backup_id': None}]


def test_a_replica_seeded_from_a_backup_deletes_that_backup_only(tmp_path):
    result = check('replica-with-snapshot', 'tenant', tmp_path)

    assert result['error'] is None, result['traceback']
    assert result['replicas_created'] == [
        {'backup_id': 'replication snapshot'}]
    assert what_was_deleted(result) == {
        'casts': ['replication snapshot'],
        'deleted rows': ['replication snapshot'],
        'Swift objects gone': ['replication snapshot']}


def series_unit_tests():
    """{module: [test names]} that the series' patches add to Trove's unit
    tests (``+    def test_...`` lines under a ``+++ b/trove/tests/...``)."""
    tests = {}
    names = [line.split('#')[0].strip()
             for line in (SERIES / 'series').read_text().splitlines()]
    for name in filter(None, names):
        module = None
        for line in (SERIES / name).read_text().splitlines():
            if line.startswith('+++ '):
                path = line[4:].split('\t')[0]
                module = None
                if path.startswith('b/trove/tests/') and path.endswith('.py'):
                    module = path[2:-3].replace('/', '.')
            elif module and (found := re.match(r'\+    def (test_\w+)', line)):
                tests.setdefault(module, []).append(found.group(1))
    return tests


def test_the_series_own_trove_unit_tests_pass(tmp_path):
    tests = series_unit_tests()
    assert tests, "the series adds no Trove unit test"

    proc = trove26(['-m', 'unittest', '-v', *tests], tmp_path)

    assert proc.returncode == 0, proc.stderr[-6000:]
    passed = set(re.findall(r'^(\S+) \.\.\. ok$', proc.stderr, re.M))
    missing = ['%s.%s' % (module, test)
               for module, names in tests.items() for test in names
               if not any(p.startswith(module + '.') and
                          p.endswith('.' + test) for p in passed)]
    assert missing == [], "did not run and pass"
