"""CouchDB's ini files, edited line by line as CouchDB edits them.

The agent changes a setting in a file only while CouchDB is down, or in a
file CouchDB reads but never writes; every other line of the file (the
comments, the other sections, CouchDB's own changes) stays as it is.
"""

import os
import re

from trove.common import files

_SECTION = re.compile(r'^\s*\[([^\]]*)\]\s*$')


def _read(path, mode, owner):
    """The file's lines, mode and owner; none and the defaults if new."""
    try:
        with open(path, encoding='utf-8') as stream:
            lines = stream.read().splitlines(keepends=True)
        stat = os.stat(path)
        return lines, stat.st_mode & 0o777, (stat.st_uid, stat.st_gid)
    except FileNotFoundError:
        return [], mode, owner


def _edit(lines, section, key, setting):
    """The lines with every definition of ``key`` in ``section`` replaced
    by ``setting`` (one line, or None to remove it); and whether the
    section was found with the key set."""
    key_line = re.compile(r'^\s*%s\s*=' % re.escape(key))
    out, current, done = [], None, False
    for line in lines:
        header = _SECTION.match(line)
        if header:
            if current == section and not done and setting:
                out.append(setting)
                done = True
            current = header.group(1).strip()
        elif current == section and key_line.match(line):
            if not done and setting:
                out.append(setting)
            done = True
            continue
        out.append(line)
    if out and not out[-1].endswith('\n'):
        out.append('\n')
    return out, current, done


def set_value(path, section, key, value, mode=0o640, owner=None):
    """Set ``key = value`` in ``[section]`` of an ini file.

    Duplicate definitions of the key in the section go.  A new file gets
    ``mode`` and ``owner``; an existing one keeps its own.
    """
    lines, mode, owner = _read(path, mode, owner)
    setting = '%s = %s\n' % (key, value)
    out, current, done = _edit(lines, section, key, setting)
    if not done:
        if current != section:
            out.append('\n[%s]\n' % section if out else '[%s]\n' % section)
        out.append(setting)
    files.write_atomically(path, ''.join(out).encode('utf-8'), mode, owner)


def remove_value(path, section, key):
    """Remove ``key`` from ``[section]``; False if it was not there."""
    lines, mode, owner = _read(path, 0o600, None)
    out, _current, done = _edit(lines, section, key, None)
    if done:
        files.write_atomically(path, ''.join(out).encode('utf-8'), mode,
                               owner)
    return done


def get_value(path, section, key):
    """The value of ``key`` in ``[section]``, or None."""
    lines, _mode, _owner = _read(path, 0o600, None)
    current = None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            current = header.group(1).strip()
        elif current == section and '=' in line:
            name, _sep, value = line.partition('=')
            if name.strip() == key:
                return value.strip()
    return None
