"""A lab OpenStack Placement for scripts/bench --placement.

Run with the Python of scripts/placement-venv (target/placement-venv):

  placement-lab.py serve CONFDIR PORT
      Placement's WSGI app (CONFDIR/placement.conf) on 127.0.0.1:PORT, one
      request at a time (wsgiref, single thread): Placement on SQLite needs
      its requests serialised. The same server as tests/src/placement.rs.

  placement-lab.py providers DB N [--api URL]
      N root resource providers named lg-000001 .. lg-N (the loadgen's
      hostnames: trustpool-server finds a host's provider by name =
      hostname, GET /resource_providers?name=HOST), each with a VCPU
      inventory like a compute node's. Written straight into Placement's
      SQLite file DB (after `placement-manage db sync`, Placement stopped),
      in one transaction, or with --api through the API (POST
      /resource_providers + PUT inventories, one provider at a time).
      Prints how long it took. Direct SQL because the API takes about
      2 requests x 10-20 ms per provider on the single-threaded server
      (minutes for 10,000; measured: see scripts/bench) against well under
      a second in SQL; the rows are the ones Placement itself writes
      (resource_providers with root_provider_id = its own id, generation
      1 after the inventory write; inventories with Placement's defaults).
"""

import json
import os
import sqlite3
import sys
import time
import uuid as uuidlib


def serve(confdir, port):
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    class Server(WSGIServer):
        # Concurrent clients queue in the backlog instead of being dropped.
        request_queue_size = 128

    os.environ["OS_PLACEMENT_CONFIG_DIR"] = confdir
    from placement.wsgi import api

    server = make_server(
        "127.0.0.1", int(port), api.application,
        server_class=Server, handler_class=QuietHandler,
    )
    print("placement listening", flush=True)
    server.serve_forever()


VCPUS = 64


def name(i):
    return "lg-%06d" % i


def providers_sql(db, n):
    conn = sqlite3.connect(db)
    with conn:
        (rc,) = conn.execute(
            "SELECT id FROM resource_classes WHERE name = 'VCPU'"
        ).fetchone() or (None,)
        if rc is None:
            # Standard classes are not rows in every release: VCPU is id 0.
            rc = 0
        (base,) = conn.execute(
            "SELECT COALESCE(MAX(id), 0) FROM resource_providers"
        ).fetchone()
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        rows = [
            (now, now, base + i, str(uuidlib.uuid4()), name(i), 1, base + i)
            for i in range(1, n + 1)
        ]
        conn.executemany(
            "INSERT INTO resource_providers (created_at, updated_at, id, uuid, "
            "name, generation, root_provider_id, parent_provider_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            rows,
        )
        conn.executemany(
            "INSERT INTO inventories (created_at, resource_provider_id, "
            "resource_class_id, total, reserved, min_unit, max_unit, "
            "step_size, allocation_ratio) VALUES (?, ?, ?, ?, 0, 1, 2147483647, 1, 1.0)",
            [(now, r[2], rc, VCPUS) for r in rows],
        )
    conn.close()


def providers_api(url, n):
    import http.client
    import urllib.parse

    u = urllib.parse.urlparse(url)
    headers = {
        "X-Auth-Token": "admin",
        "OpenStack-API-Version": "placement 1.39",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }

    def call(method, path, body):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        c.request(method, path, json.dumps(body), headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.status >= 300:
            raise SystemExit("%s %s: %d %s" % (method, path, r.status, data[:300]))
        return json.loads(data) if data else None

    for i in range(1, n + 1):
        rp = call("POST", "/resource_providers", {"name": name(i)})
        call("PUT", "/resource_providers/%s/inventories" % rp["uuid"], {
            "resource_provider_generation": rp["generation"],
            "inventories": {"VCPU": {"total": VCPUS}},
        })


def main(argv):
    if len(argv) == 3 and argv[0] == "serve":
        serve(argv[1], argv[2])
    elif len(argv) in (3, 5) and argv[0] == "providers":
        n = int(argv[2])
        t0 = time.monotonic()
        if len(argv) == 5 and argv[3] == "--api":
            providers_api(argv[4], n)
            how = "api"
        else:
            providers_sql(argv[1], n)
            how = "sql"
        print("created %d resource providers (%s) in %.1f s" % (n, how, time.monotonic() - t0))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
