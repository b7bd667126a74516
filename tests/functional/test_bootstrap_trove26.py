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
"""How tools/bootstrap applies the Trove 26 patch series to its venv.

bootstrap is sourced (it then only defines) and its functions run against
a scratch series and a scratch tree: the patches apply in the series'
order, a patch that does not apply stops the run naming it and changes
nothing, and the venv is rebuilt when a patch changes and only then.  What
the real series does to Trove is tests/functional/test_trove_enablement.py.
"""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / 'tools' / 'bootstrap'

CREATE = '''\
--- /dev/null
+++ b/trove/notes.py
@@ -0,0 +1,2 @@
+first = 1
+second = 2
'''
CHANGE = '''\
--- a/trove/notes.py
+++ b/trove/notes.py
@@ -1,2 +1,2 @@
 first = 1
-second = 2
+second = 'two'
'''
STALE = '''\
--- a/trove/notes.py
+++ b/trove/notes.py
@@ -1,2 +1,2 @@
-first = 0
+first = 'one'
 second = 2
'''


def make_series(work, series_text, **patches):
    series = work / 'series-dir'
    series.mkdir(exist_ok=True)
    (series / 'series').write_text(series_text)
    for name, text in patches.items():
        (series / name).write_text(text)
    return series


def bootstrap(work, series, script, templates=None, **env):
    """Run ``script`` after sourcing bootstrap, the series at ``series``
    (and CouchDB's templates at ``templates``, else the project's)."""
    merged = dict(os.environ, BOOTSTRAP=str(BOOTSTRAP), WORK=str(work),
                  SERIES=str(series), **env)
    runner = ('source "$BOOTSTRAP"\nCACHE=$WORK/cache\n'
              'TROVE26_VENV=$WORK/venv\nTROVE26_SERIES=$SERIES\n')
    if templates is not None:
        merged['TEMPLATES'] = str(templates)
        runner += 'TROVE26_TEMPLATES=$TEMPLATES\n'
    runner += script
    return subprocess.run(['bash', '-c', runner], env=merged,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)


def test_the_patches_apply_in_the_series_order(tmp_path):
    tree = tmp_path / 'site-packages'
    tree.mkdir()
    series = make_series(tmp_path, '# in order\n0001-create.patch\n\n'
                         '0002-change.patch  # needs 0001\n',
                         **{'0001-create.patch': CREATE,
                            '0002-change.patch': CHANGE})

    result = bootstrap(tmp_path, series, 'apply_trove26_series "$WORK/%s"'
                       % tree.name)

    assert result.returncode == 0, result.stderr
    assert (tree / 'trove' / 'notes.py').read_text() == (
        "first = 1\nsecond = 'two'\n")
    assert result.stdout.splitlines() == [
        'bootstrap: trove26-venv: applied 0001-create.patch',
        'bootstrap: trove26-venv: applied 0002-change.patch']


def test_a_patch_that_does_not_apply_stops_the_run_naming_it(tmp_path):
    tree = tmp_path / 'site-packages'
    tree.mkdir()
    series = make_series(tmp_path, '0001-create.patch\n0002-stale.patch\n'
                         '0003-change.patch\n',
                         **{'0001-create.patch': CREATE,
                            '0002-stale.patch': STALE,
                            '0003-change.patch': CHANGE})

    result = bootstrap(tmp_path, series, 'apply_trove26_series "$WORK/%s"'
                       % tree.name)

    assert result.returncode == 1
    assert ('bootstrap: ERROR: %s/0002-stale.patch does not apply to %s\n'
            % (series, tree)) in result.stderr
    assert 'Hunk #1 FAILED' in result.stderr
    assert (tree / 'trove' / 'notes.py').read_text() == (
        'first = 1\nsecond = 2\n')
    assert sorted(p.name for p in (tree / 'trove').iterdir()) == ['notes.py']


def test_a_patch_missing_from_the_series_folder_stops_the_run(tmp_path):
    series = make_series(tmp_path, '0001-create.patch\n')

    result = bootstrap(tmp_path, series, 'apply_trove26_series "$WORK"')

    assert result.returncode == 1
    assert ('bootstrap: ERROR: %s/0001-create.patch is listed in the series '
            'but missing\n' % series) in result.stderr


def test_the_venv_is_rebuilt_when_a_patch_changes_and_only_then(tmp_path):
    series = make_series(tmp_path, '0001-create.patch\n',
                         **{'0001-create.patch': CREATE})
    venv_python = tmp_path / 'venv' / 'bin' / 'python'
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    # A venv bootstrap made, its stamp written; PYTHON=false: a rebuild
    # fails at once, after removing the venv.
    made = bootstrap(tmp_path, series, 'mkdir -p "$CACHE"\n'
                     'trove26_stamp_value >"$TROVE26_VENV/.bootstrap-stamp"')
    assert made.returncode == 0, made.stderr
    ensure = 'mkdir -p "$CACHE"\nensure_trove26_venv'

    again = bootstrap(tmp_path, series, ensure, PYTHON='false')
    assert again.returncode == 0, again.stderr
    assert again.stdout == ('bootstrap: trove26-venv: trove==26.0.0 ready in '
                            '.cache/trove26-venv, contrib/trove-26.0.0 '
                            "applied, CouchDB's templates installed\n")

    (series / '0001-create.patch').write_text(CREATE + '+third = 3\n')
    changed = bootstrap(tmp_path, series, ensure, PYTHON='false')
    assert changed.returncode == 1
    assert 'pip install trove==26.0.0 into .cache/trove26-venv' in (
        changed.stdout)
    assert not venv_python.parent.exists()


def test_couchdbs_templates_are_installed_and_their_change_rebuilds(
        tmp_path):
    """The operator guide's copy of trove/templates/couchdb/*.template
    into Trove's templates directory; a changed template changes the
    stamp, so the venv is rebuilt with it."""
    series = make_series(tmp_path, '0001-create.patch\n',
                         **{'0001-create.patch': CREATE})
    templates = tmp_path / 'templates'
    templates.mkdir()
    (templates / 'replica.config.template').write_text('[replicator]\n')
    site = tmp_path / 'site-packages'

    installed = bootstrap(tmp_path, series, 'install_trove26_templates '
                          '"$WORK/site-packages"', templates=templates)
    assert installed.returncode == 0, installed.stderr
    assert (site / 'trove' / 'templates' / 'couchdb' /
            'replica.config.template').read_text() == '[replicator]\n'

    stamp = 'trove26_stamp_value'
    before = bootstrap(tmp_path, series, stamp, templates=templates)
    (templates / 'replica.config.template').write_text('[replicator]\n'
                                                       'x = 1\n')
    after = bootstrap(tmp_path, series, stamp, templates=templates)
    assert before.returncode == after.returncode == 0, after.stderr
    assert before.stdout != after.stdout
    assert 'replica.config.template' in after.stdout
