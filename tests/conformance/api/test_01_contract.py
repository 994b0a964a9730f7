"""Management API contract (docs/architecture.md "Management REST API (v1)"): bad requests get
a 4xx in the error shape ``{"error", "message"}`` and change nothing; the happy paths
return what the document promises."""

from __future__ import annotations

import re
import socket

import httpx
import msgspec

from gateway.testing.server import TestGateway


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str)
    assert body["message"]
    if code is not None:
        assert body["error"] == code


def test_unknown_route_and_method(api: httpx.Client) -> None:
    assert_error(api.get("/api/v1/nope"), 404, "not_found")
    assert_error(api.get("/nope"), 404, "not_found")
    # the root is the web console's front door (a person opening the API URL lands there)
    assert api.get("/").headers["location"] == "/console/"
    r = api.put("/api/v1/connectors")
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}


def test_auth_required(gw: TestGateway, api: httpx.Client) -> None:
    base = f"http://127.0.0.1:{gw.ports['api']}"
    assert_error(httpx.get(f"{base}/api/v1/connectors"), 401, "unauthorized")
    r = httpx.get(f"{base}/api/v1/connectors", headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(
        f"{base}/api/v1/connectors",
        json={"name": "x", "id": "noauth1"},
        headers={"Authorization": "Basic Zm9vOmJhcg=="},
    )
    assert_error(r, 401)
    assert api.get("/api/v1/connectors/noauth1").status_code == 404  # nothing created
    # health, the document and loopback metrics are open
    assert httpx.get(f"{base}/api/v1/health").json()["status"] == "ok"
    assert httpx.get(f"{base}/api/v1/openapi.json").status_code == 200
    assert "gateway_devices" in httpx.get(f"{base}/metrics").text


def test_extra_admin_tokens(gw: TestGateway, api: httpx.Client) -> None:
    base = f"http://127.0.0.1:{gw.ports['api']}"
    made = api.post("/api/v1/tokens", json={"name": "ci"})
    assert made.status_code == 201
    tok = made.json()
    hdr = {"Authorization": f"Bearer {tok['token']}"}
    assert httpx.get(f"{base}/api/v1/connectors", headers=hdr).status_code == 200
    listed = api.get("/api/v1/tokens").json()
    assert {"id": tok["id"], "name": "ci", "created": tok["created"]} in listed
    assert all("token" not in t for t in listed)
    assert api.delete(f"/api/v1/tokens/{tok['id']}").status_code == 204
    assert_error(httpx.get(f"{base}/api/v1/connectors", headers=hdr), 401)
    assert_error(api.delete(f"/api/v1/tokens/{tok['id']}"), 404)


def test_connector_lifecycle_and_bad_bodies(api: httpx.Client) -> None:
    assert_error(
        api.post(
            "/api/v1/connectors", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
        "bad_request",
    )
    assert_error(api.post("/api/v1/connectors", json={"name": 5}), 400)
    assert_error(api.post("/api/v1/connectors", json={"name": "a", "bogus": 1}), 400)
    assert_error(api.post("/api/v1/connectors", json={"name": "a", "id": "UPPER"}), 400)
    assert_error(api.post("/api/v1/connectors", json=[1, 2]), 400)
    before = api.get("/api/v1/connectors").json()["items"]
    # one alias twice: refused like adding an alias that exists, nothing created (found by
    # schemathesis: the store's UNIQUE constraint answered 503 store_failed)
    twice = [{"alias": "t", "format": "number"}, {"alias": "t", "format": "boolean"}]
    assert_error(
        api.post("/api/v1/connectors", json={"name": "a", "id": "twice1", "resources": twice}),
        409,
        "already_exists",
    )
    assert_error(api.get("/api/v1/connectors/twice1"), 404)
    r = api.post(
        "/api/v1/connectors",
        json={
            "name": "Factory",
            "id": "fact01",
            "description": "d",
            "settings": {"provisioning": {"presenter_identity": False}},
            "resources": [{"alias": "temp", "format": "number"}],
        },
    )
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["fqdn"] == "fact01.m2.localhost"
    assert c["resources"] == ["temp"]
    assert c["settings"]["provisioning"]["presenter_identity"] is False
    assert len(api.get("/api/v1/connectors").json()["items"]) == len(before) + 1
    assert_error(
        api.post("/api/v1/connectors", json={"name": "again", "id": "fact01"}),
        409,
        "already_exists",
    )
    r = api.patch("/api/v1/connectors/fact01", json={"description": "new"})
    assert r.json()["description"] == "new"
    assert r.json()["name"] == "Factory"
    # settings: deep merge keeps siblings; invalid values change nothing
    r = api.patch(
        "/api/v1/connectors/fact01/settings", json={"provisioning": {"auth_type": "password"}}
    )
    assert r.status_code == 200
    prov = r.json()["provisioning"]
    assert prov["auth_type"] == "password"
    assert prov["presenter_identity"] is False
    for bad in (
        {"identity_format": {"type": "nope"}},
        {"limits": {"max_payload": "x"}},
        {"provisioning": {"unknown": 1}},
        {"pki": {"enabled": True}},
    ):
        assert_error(api.patch("/api/v1/connectors/fact01/settings", json=bad), 400)
    assert api.get("/api/v1/connectors/fact01/settings").json()["provisioning"] == prov
    # resources
    assert_error(api.post("/api/v1/connectors/fact01/resources", json={"alias": "a.b"}), 400)
    assert (
        api.post(
            "/api/v1/connectors/fact01/resources", json={"alias": "mode", "settable": True}
        ).status_code
        == 201
    )
    r = api.patch("/api/v1/connectors/fact01/resources/mode", json={"unit": "rpm"})
    assert r.json() == {**r.json(), "alias": "mode", "unit": "rpm", "settable": True}
    assert_error(api.patch("/api/v1/connectors/fact01/resources/mode", json={"format": "hex"}), 400)
    assert_error(api.get("/api/v1/connectors/fact01/resources/nope"), 404)
    assert [x["alias"] for x in api.get("/api/v1/connectors/fact01/resources").json()["items"]] == [
        "mode",
        "temp",
    ]
    assert api.delete("/api/v1/connectors/fact01").status_code == 204
    assert_error(api.get("/api/v1/connectors/fact01"), 404, "not_found")
    assert_error(api.get("/api/v1/connectors/nosuch/devices"), 404)


def test_devices_import_list_patch(api: httpx.Client) -> None:
    assert api.post("/api/v1/connectors", json={"name": "D", "id": "devs01"}).status_code == 201
    base = "/api/v1/connectors/devs01/devices"
    # malformed CSV and bad media: 400, nothing written
    assert_error(
        api.post(f"{base}/import", content=b"identity\nx\n", headers={"content-type": "text/csv"}),
        400,
    )
    assert_error(
        api.post(
            f"{base}/import", content=b"ID,colour\nx,red\n", headers={"content-type": "text/csv"}
        ),
        400,
    )
    assert_error(
        api.post(f"{base}/import", content=b"\xff\xfe\x00", headers={"content-type": "text/csv"}),
        400,
    )
    assert_error(api.post(f"{base}/import", json={"ID": 1}), 400)
    assert api.get(base).json() == {"items": [], "next": None}
    rows = "".join(f"d{i:03},{'north' if i % 2 else 'south'}\n" for i in range(120))
    csv = f"ID,tag:site\n{rows}d001,dup\n"
    # a row error with all_or_nothing (default): reported, nothing written
    r = api.post(f"{base}/import", content=csv.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200
    assert r.json()["created"] == 0
    assert r.json()["errors"][0]["line"] == 122
    assert api.get(base).json()["items"] == []
    r = api.post(
        f"{base}/import?dry_run=true&all_or_nothing=false",
        content=csv.encode(),
        headers={"content-type": "text/csv"},
    )
    assert r.json()["dry_run"] is True
    assert api.get(base).json()["items"] == []
    # multipart, the Murano CLI's shape
    r = api.post(
        f"{base}/import?all_or_nothing=false",
        files={"identities": ("ids.csv", csv.encode(), "text/csv")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 120
    page = api.get(base, params={"tag": "site:north", "limit": 50}).json()
    assert len(page["items"]) == 50
    assert page["next"]
    assert all(d["tags"] == [{"name": "site", "value": "north"}] for d in page["items"])
    rest = api.get(base, params={"tag": "site:north", "limit": 50, "cursor": page["next"]}).json()
    assert len(rest["items"]) == 10
    assert rest["next"] is None
    assert len(api.get(base, params={"q": "d11", "limit": 1000}).json()["items"]) == 10
    assert_error(api.get(base, params={"tag": "nocolon"}), 400)
    assert_error(api.get(base, params={"limit": "x"}), 400)
    assert_error(api.get(base, params={"status": "weird"}), 400)
    # add, patch (lock, tags), delete
    assert_error(api.post(base, json={"identity": "d000"}), 409)
    assert_error(api.post(base, json={"identity": 7}), 400)
    r = api.post(
        base,
        json={
            "identity": "extra",
            "tags": [{"name": "k", "value": "v"}],
            "auth": {"type": "token", "key": "t" * 40},
        },
    )
    assert r.status_code == 201
    assert r.json()["status"] == "provisioned"
    r = api.patch(
        f"{base}/extra",
        json={
            "locked": True,
            "tags": {
                "add": [{"name": "k", "value": "w"}, {"name": "z", "value": "1"}],
                "remove": [{"name": "k", "value": "v"}],
            },
        },
    )
    body = r.json()
    assert body["locked"] is True
    assert body["tags"] == [{"name": "k", "value": "w"}, {"name": "z", "value": "1"}]
    r = api.patch(f"{base}/extra", json={"tags": {"remove": [{"name": "k"}]}})
    assert r.json()["tags"] == [{"name": "z", "value": "1"}]
    assert_error(api.patch(f"{base}/extra", json={"locked": "yes"}), 400)
    assert api.get(f"{base}/extra").json()["locked"] is True
    r = api.patch(f"{base}/extra", json={"reprovision": True})
    assert r.json()["reprovision"] is True
    assert_error(api.patch(f"{base}/ghost", json={"locked": True}), 404)
    assert api.delete(f"{base}/extra").status_code == 204
    assert_error(api.get(f"{base}/extra"), 404)


def test_state_and_events(api: httpx.Client) -> None:
    base = "/api/v1/connectors/demo/devices"
    assert api.post(base, json={"identity": "st1"}).status_code == 201
    after = api.get("/api/v1/connectors/demo/events", params={"after": -1}).json()["next"]
    assert_error(api.patch(f"{base}/st1/state", json={"data_in": "x"}), 400)  # not settable
    assert_error(api.patch(f"{base}/st1/state", json={"nope": "x"}), 404)
    assert_error(api.patch(f"{base}/ghost/state", json={"data_out": "x"}), 404)
    assert_error(api.patch(f"{base}/st1/state", json=["x"]), 400)
    r = api.patch(f"{base}/st1/state", json={"data_out": {"on": True}})
    assert r.status_code == 200
    assert r.json()["data_out"]["set"] == '{"on":true}'
    assert r.json()["data_out"]["pending"] is True
    assert api.get(f"{base}/st1/state").json() == r.json()
    ev = api.get("/api/v1/connectors/demo/events", params={"after": after, "wait": 5}).json()
    assert [e["type"] for e in ev["items"]] == ["data_out"]
    assert ev["next"] == ev["items"][0]["seq"]
    assert_error(api.get("/api/v1/connectors/demo/events", params={"wait": 1e9}), 400)


def test_content_roundtrip_range_and_limits(gw: TestGateway, api: httpx.Client) -> None:
    base = "/api/v1/connectors/demo/content"
    blob = bytes(range(256)) * 4096  # 1 MiB
    r = api.put(f"{base}/fw/v1.bin", content=blob, params={"description": "first"})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["length"] == len(blob)
    assert info["description"] == "first"
    assert api.get(f"{base}/fw/v1.bin").content == blob
    r = api.get(f"{base}/fw/v1.bin", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == blob[10:20]
    r = api.get(f"{base}/fw/v1.bin", headers={"Range": "bytes=99999999-"})
    assert_error(r, 416)
    assert api.get(f"{base}/fw/v1.bin", headers={"Range": "pages=1"}).content == blob
    assert api.get(f"{base}/fw/v1.bin", params={"info": "true"}).json() == info
    assert [i["id"] for i in api.get(base, params={"prefix": "fw/"}).json()["items"]] == [
        "fw/v1.bin"
    ]
    assert_error(api.post(base, params={"id": "fw/v1.bin"}, content=b"x"), 409)
    assert api.post(base, params={"id": "b.txt"}, content=b"x").status_code == 201
    assert_error(api.put(f"{base}/bad..id", content=b"x"), 400)
    # a declared length above the limit is refused before any byte is read
    with socket.create_connection(("127.0.0.1", gw.ports["api"])) as s:
        s.sendall(
            b"PUT /api/v1/connectors/demo/content/huge HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + gw.admin_token.encode() + b"\r\n"
            b"Content-Length: 99999999999\r\n\r\n"
        )
        s.settimeout(10)
        head = ""
        while not head.endswith("}"):
            chunk = s.recv(65536).decode()
            if not chunk:
                break
            head += chunk
    assert head.startswith("HTTP/1.1 413"), head
    assert msgspec.json.decode(head.split("\r\n\r\n", 1)[1])["error"] == "too_large"
    assert_error(api.get(f"{base}/huge", params={"info": "true"}), 404)
    # oversized JSON bodies are refused too
    assert_error(
        api.post(
            "/api/v1/connectors",
            content=b'{"name": "' + b"x" * 2_000_000 + b'"}',
            headers={"content-type": "application/json"},
        ),
        413,
        "too_large",
    )
    assert api.delete(f"{base}/fw/v1.bin").status_code == 204
    assert_error(api.get(f"{base}/fw/v1.bin"), 404)


def test_openapi_describes_every_route(api: httpx.Client) -> None:
    doc = api.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, methods in {
        "/api/v1/health": {"get"},
        "/api/v1/openapi.json": {"get"},
        "/metrics": {"get"},
        "/api/v1/connectors": {"get", "post"},
        "/api/v1/connectors/{cid}": {"get", "patch", "delete"},
        "/api/v1/connectors/{cid}/settings": {"get", "patch"},
        "/api/v1/connectors/{cid}/stats": {"get"},
        "/api/v1/connectors/{cid}/resources": {"get", "post"},
        "/api/v1/connectors/{cid}/resources/{alias}": {"get", "patch", "delete"},
        "/api/v1/connectors/{cid}/devices": {"get", "post"},
        "/api/v1/connectors/{cid}/devices/import": {"post"},
        "/api/v1/connectors/{cid}/devices/{identity}": {"get", "patch", "delete"},
        "/api/v1/connectors/{cid}/devices/{identity}/state": {"get", "patch"},
        "/api/v1/connectors/{cid}/content": {"get", "post"},
        "/api/v1/connectors/{cid}/content/{content_id}": {"get", "put", "delete"},
        "/api/v1/connectors/{cid}/events": {"get"},
        "/api/v1/connectors/{cid}/logs": {"get"},
        "/api/v1/tokens": {"get", "post"},
        "/api/v1/tokens/{token_id}": {"delete"},
        "/api/v1/tls/certificates": {"get"},
        "/api/v1/tls/reload": {"post"},
    }.items():
        assert set(paths[path]) == methods, path
    integration_paths = [p for p in paths if "/integrations" in p]
    assert len(integration_paths) == 10
    assert len(paths) == 21 + len(integration_paths)
    err = doc["components"]["schemas"]["ErrorBody"]
    assert set(err["required"]) == {"error", "message"}
    for methods in paths.values():
        for op in methods.values():
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody")


def test_openapi_links_reach_what_a_creation_made(api: httpx.Client) -> None:
    """A creating operation's answer links to the operations under what it created, with
    the new name from the answer and the other path parameters from the request, so a
    client (or schemathesis' stateful phase) gets past the 404 of a random name."""
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    links = paths["/api/v1/connectors"]["post"]["responses"]["201"]["links"]
    assert links["getConnector"] == {
        "operationId": "getConnector",
        "parameters": {"cid": "$response.body#/id"},
    }
    assert {"addDevice", "createResource", "readEvents", "addIntegration"} <= set(links)
    device = paths["/api/v1/connectors/{cid}/devices"]["post"]["responses"]["201"]["links"]
    assert device["setState"]["parameters"] == {
        "cid": "$request.path.cid",
        "identity": "$response.body#/identity",
    }
    put = paths["/api/v1/connectors/{cid}/content/{content_id}"]["put"]["responses"]["200"]
    assert put["links"]["getContent"]["parameters"]["content_id"] == "$request.path.content_id"
    jobs = paths["/api/v1/connectors/{cid}/integrations/{name}/jobs"]["get"]["responses"]["200"]
    assert jobs["links"]["runIntegrationJob"]["parameters"]["job"] == "$response.body#/jobs/0/job"
    # every link names an operation of the document
    operation_ids = {op["operationId"] for ops in paths.values() for op in ops.values()}
    for ops in paths.values():
        for op in ops.values():
            for resp in op["responses"].values():
                for link in resp.get("links", {}).values():
                    assert link["operationId"] in operation_ids


def test_csv_import_schema_says_what_the_importer_takes(api: httpx.Client) -> None:
    """The text/csv body's pattern admits exactly the headers the importer takes (a
    schema-valid CSV is never refused as a whole; found by schemathesis: an empty body)."""
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    body = paths["/api/v1/connectors/{cid}/devices/import"]["post"]["requestBody"]["content"]
    pattern = re.compile(body["text/csv"]["schema"]["pattern"])
    url = "/api/v1/connectors/demo/devices/import"
    csv = {"content-type": "text/csv"}
    for text in ("ID", " id ,Certificate,, TAG:site \r\nx1,,a\n", "ID,SSL client certificate"):
        assert pattern.search(text), text
        r = api.post(url, params={"dry_run": "true"}, content=text.encode(), headers=csv)
        assert r.status_code == 200, (text, r.text)
    for text in ("", "Name", "ID,colour", "ID,tag: ", "\nID"):
        assert not pattern.search(text), text
        r = api.post(url, params={"dry_run": "true"}, content=text.encode(), headers=csv)
        assert_error(r, 400)
