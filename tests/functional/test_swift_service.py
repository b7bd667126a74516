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
"""The single-node Swift of the backup tests behaves like Swift.

What the backup and restore code relies on: auth v1, streamed uploads,
ETag = MD5, SLO manifests with their ETag and their delete, object
metadata, and a proxy that can go away and come back.
"""

import hashlib
import json
import os
import uuid

import pytest
import requests
from swiftclient import exceptions as swift_exc

from integration.services import base
from integration.services.swift import SwiftCluster


def md5_hex(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def chunks(count, size=64 * 1024):
    return [os.urandom(size) for _ in range(count)]


@pytest.fixture
def container(swift):  # noqa: F811
    """A new, empty container: (connection, name)."""
    conn = swift.connection()
    name = f"test-{uuid.uuid4().hex[:12]}"
    conn.put_container(name)
    return conn, name


def test_cluster_answers_on_loopback(swift):  # noqa: F811
    assert swift.proxy_url == f"http://127.0.0.1:{swift.proxy.port}"
    assert swift.auth_url == f"{swift.proxy_url}/auth/v1.0"
    response = requests.get(f"{swift.proxy_url}/healthcheck", timeout=10)
    assert (response.status_code, response.text) == (200, "OK")
    for proc in swift.processes:
        assert base.listens(proc.pid, proc.port), proc.name


def test_auth_v1_gives_a_token_for_the_test_account(swift):  # noqa: F811
    token, storage_url = swift.token_and_storage_url()
    assert token.startswith("AUTH_tk")
    assert storage_url == swift.storage_url == (
        f"{swift.proxy_url}/v1/AUTH_test")
    account = requests.head(storage_url, headers={"X-Auth-Token": token},
                            timeout=10)
    assert account.status_code in (200, 204)  # 204: no container yet
    assert "x-account-container-count" in account.headers
    wrong = requests.get(swift.auth_url, timeout=10, headers={
        "X-Storage-User": swift.user, "X-Storage-Pass": "wrong"})
    assert wrong.status_code == 401


def test_a_created_container_is_listed(container):
    conn, name = container
    assert int(conn.head_container(name)["x-container-object-count"]) == 0
    _, listing = conn.get_account()
    assert name in [entry["name"] for entry in listing]


def test_a_streamed_put_stores_what_the_generator_yielded(container):
    conn, name = container
    parts = chunks(20)
    etag = conn.put_object(name, "streamed", contents=iter(parts))
    headers, body = conn.get_object(name, "streamed",
                                    resp_chunk_size=256 * 1024)
    data = b"".join(body)
    assert data == b"".join(parts)
    assert etag == headers["etag"] == md5_hex(data)
    assert int(headers["content-length"]) == 20 * 64 * 1024


def test_an_objects_etag_is_its_md5(container):
    conn, name = container
    data = os.urandom(1000)
    conn.put_object(name, "plain", contents=data)
    assert conn.head_object(name, "plain")["etag"] == md5_hex(data)


def put_slo(conn, name, segments):
    """Upload segments and their manifest; return the segment entries."""
    entries = []
    for i, data in enumerate(segments):
        path = f"{name}_segments/part-{i:03d}"
        etag = conn.put_object(f"{name}_segments", path.split("/", 1)[1],
                               contents=data)
        entries.append({"path": f"/{path}", "etag": etag,
                        "size_bytes": len(data)})
    conn.put_object(name, "large", contents=json.dumps(entries),
                    query_string="multipart-manifest=put")
    return entries


def test_an_slo_of_small_segments_reads_as_their_concatenation(container):
    conn, name = container
    conn.put_container(f"{name}_segments")
    segments = [b"first segment ", b"2nd ", b"and the third, the last"]
    entries = put_slo(conn, name, segments)

    headers, body = conn.get_object(name, "large")
    assert body == b"".join(segments)
    etag = conn.head_object(name, "large")["etag"].strip('"')
    assert etag == md5_hex("".join(e["etag"] for e in entries).encode())
    assert headers["x-static-large-object"] == "True"


def test_deleting_an_slo_manifest_deletes_its_segments(container):
    conn, name = container
    conn.put_container(f"{name}_segments")
    put_slo(conn, name, [b"a", b"bb", b"ccc"])

    conn.delete_object(name, "large", query_string="multipart-manifest=delete")

    with pytest.raises(swift_exc.ClientException) as missing:
        conn.head_object(name, "large")
    assert missing.value.http_status == 404
    _, listing = conn.get_container(f"{name}_segments")
    assert listing == []


def test_object_metadata_round_trips_and_a_post_replaces_it(container):
    conn, name = container
    conn.put_object(name, "meta", contents=b"x", headers={
        "X-Object-Meta-Backup-Type": "couchdb-tar",
        "X-Object-Meta-Lsn": "42"})
    headers = conn.head_object(name, "meta")
    assert headers["x-object-meta-backup-type"] == "couchdb-tar"
    assert headers["x-object-meta-lsn"] == "42"

    conn.post_object(name, "meta", headers={"X-Object-Meta-Lsn": "43"})
    headers = conn.head_object(name, "meta")
    assert headers["x-object-meta-lsn"] == "43"
    assert "x-object-meta-backup-type" not in headers


def test_a_stopped_proxy_refuses_connections_until_started(
        swift, container):  # noqa: F811
    _, name = container
    conn = swift.connection(retries=0)
    swift.stop_proxy()
    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            conn.head_container(name)
        assert not base.port_is_open(swift.proxy.port)
    finally:
        swift.start_proxy()
    # The data and the token (memcached keeps it) survive the restart.
    assert conn.head_container(name)


def test_a_proxy_stopped_mid_upload_fails_it_and_stores_nothing(
        swift, container):  # noqa: F811
    _, name = container
    conn = swift.connection(retries=0)

    def stream():
        for i, chunk in enumerate(chunks(64)):
            if i == 8:
                swift.stop_proxy()
            yield chunk

    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            conn.put_object(name, "interrupted", contents=stream())
    finally:
        swift.start_proxy()
    with pytest.raises(swift_exc.ClientException) as missing:
        conn.head_object(name, "interrupted")
    assert missing.value.http_status == 404


def test_stop_leaves_no_process_behind(tmp_path, swift):  # noqa: F811
    cluster = SwiftCluster(tmp_path / "swift")
    try:
        cluster.start()
        pids = cluster.pids()
        assert len(pids) == 5
        ports = {proc.port for proc in cluster.processes}
        assert not ports & {proc.port for proc in swift.processes}
        assert cluster.connection().head_account()
    finally:
        cluster.stop()
    assert not [pid for pid in pids if base.pid_exists(pid)]
    assert not [port for port in ports if base.port_is_open(port)]
