"""The seed design the broker replaced: one `sops decrypt --extract` process per request,
reading the file in the work tree (no cache, no Git objects). Only what a read costs is
kept; tokens and audit are left out, so this flatters the seed."""

from __future__ import annotations

import json
import os
import subprocess

from flask import Flask, Response, abort

app = Flask(__name__)
SECRETS_DIR = os.environ["SEED_SECRETS_DIR"]
SOPS_BIN = os.environ["SEED_SOPS_BIN"]


@app.get("/api/v1/vault/<environment>/<key>")
def read(environment: str, key: str) -> Response:
    path = os.path.join(SECRETS_DIR, f"{environment}.enc.yaml")
    proc = subprocess.run(
        [SOPS_BIN, "decrypt", "--extract", json.dumps([key]), path],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        abort(404)
    body = {"environment": environment, "key": key, "value": proc.stdout.decode()}
    return Response(json.dumps(body), mimetype="application/json")
