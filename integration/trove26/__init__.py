"""Drive the agent with the real upstream Trove 26 control-plane code.

``drive.py`` runs with the python of ``.cache/trove26-venv`` (made by
``tools/bootstrap``), never with ours: it imports Trove 26's own ``trove``
package, which would shadow this project's.  ``integration/test_trove26.py``
runs it as a subprocess.
"""
