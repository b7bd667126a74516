"""Runs scenario groups step by step and says which step failed.

Steps run in order; the first failure stops the run with a
``ScenarioFailure`` naming the group, the step, its place and the cause,
followed by the report of the steps that ran (name, outcome, seconds).
"""

import time

from integration.scenario import groups as groups_mod


class ScenarioFailure(AssertionError):
    """A scenario step failed; the message names it."""


class ScenarioRun:

    def __init__(self, cloud, names, out=print):
        self.cloud = cloud
        self.plan = groups_mod.plan(names)
        self.out = out
        self.report = []

    def run(self):
        self.out('scenario groups: %s' % ' -> '.join(
            g.name for g in self.plan))
        for group in self.plan:
            runner = group.runner(self.cloud)
            for number, step in enumerate(group.steps, 1):
                self._step(group, runner, number, step)
        self.out(self.summary())
        return self.report

    def _step(self, group, runner, number, step):
        where = "group '%s', step %d of %d '%s'" % (
            group.name, number, len(group.steps), step)
        method = getattr(runner, 'run_' + step, None)
        if method is None:
            raise ScenarioFailure('%s: %s has no run_%s' % (
                where, type(runner).__name__, step))
        started = time.monotonic()
        try:
            method()
        except Exception as exc:
            seconds = time.monotonic() - started
            self.report.append((group.name, step, 'FAILED', seconds))
            cause = str(exc).strip() or '(no message)'
            raise ScenarioFailure(
                'scenario %s failed after %.1f s: %s: %s\n\n%s' % (
                    where, seconds, type(exc).__name__, cause,
                    self.summary())) from exc
        seconds = time.monotonic() - started
        self.report.append((group.name, step, 'ok', seconds))
        self.out('  %-18s %-40s ok %6.1f s' % (group.name, step, seconds))

    def summary(self):
        lines = ['scenario report:']
        for group, step, outcome, seconds in self.report:
            lines.append('  %-18s %-40s %-6s %6.1f s' % (group, step,
                                                         outcome, seconds))
        done = {(g, s) for g, s, _o, _t in self.report}
        not_run = ['%s/%s' % (g.name, s) for g in self.plan
                   for s in g.steps if (g.name, s) not in done]
        if not_run:
            lines.append('  not run: %s' % ', '.join(not_run))
        return '\n'.join(lines)
