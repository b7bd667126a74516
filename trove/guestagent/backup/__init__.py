"""Backups of the CouchDB data: streaming stages, storage and restore."""
