"""`make token`: in a scratch copy of the project, the set-up step makes a
development key pair and .dev.vars, and runtime/token.mjs prints a token the
local server accepts: RS256 over the dev key, the issuer and an authorized
party from wrangler.toml, a subject for the user. The signature is checked with
Node's crypto against the public key the Worker is given (CLERK_JWT_KEY)."""

import base64
import json
import os
import shutil
import subprocess
import time
import tomllib

import pytest

from conftest import ROOT, WRANGLER_ENV

NODE = os.environ.get("NODE", "node")
VERIFY_JS = """
const crypto = require("node:crypto");
const [token, pem] = [process.argv[1], process.argv[2]];
const [h, p, s] = token.split(".");
const ok = crypto.verify("sha256", Buffer.from(h + "." + p), pem, Buffer.from(s, "base64url"));
process.stdout.write(ok ? "valid" : "invalid");
"""


def b64json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture(scope="module")
def project(tmp_path_factory, migrated):
    """A scratch copy holding what `make token` needs, its local D1 the migrated top-level state."""
    copy = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "runtime", copy / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("wrangler.toml", ".dev.vars.example", "package.json"):
        shutil.copy(ROOT / name, copy / name)
    (copy / "node_modules").symlink_to(ROOT / "node_modules")
    (copy / ".wrangler").mkdir()
    (copy / ".wrangler" / "state-local").symlink_to(migrated[""].persist_dir)
    (copy / ".wrangler" / "state-staging").symlink_to(migrated["staging"].persist_dir)
    setup = subprocess.run([NODE, "runtime/devsetup.mjs"], cwd=copy, capture_output=True, text=True, check=False)
    assert setup.returncode == 0, setup.stderr
    return copy


def make_token(project, user: str, role: str = "", env: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [NODE, "runtime/token.mjs", user, role, env],
        cwd=project,
        env=WRANGLER_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def public_key(project) -> str:
    for line in (project / ".dev.vars").read_text().splitlines():
        if line.startswith("CLERK_JWT_KEY="):
            return line.split("=", 1)[1].strip('"').replace("\\n", "\n")
    raise AssertionError("CLERK_JWT_KEY missing from .dev.vars")


def verify(token: str, pem: str) -> bool:
    run = subprocess.run([NODE, "-e", VERIFY_JS, token, pem], capture_output=True, text=True, check=True)
    return run.stdout == "valid"


@pytest.fixture(scope="module")
def ann_token(project) -> str:
    run = make_token(project, "ann")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1
    return run.stdout.strip()


def test_setup_keeps_the_private_half_out_of_git(project):
    assert (project / ".dev" / "clerk-dev-private.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public_key(project).startswith("-----BEGIN PUBLIC KEY-----")
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".dev/" in ignored and ".dev.vars" in ignored


def test_token_is_signed_by_the_dev_key_with_the_local_claims(project, ann_token):
    token = ann_token
    assert token.count(".") == 2
    header_segment, claims_segment, _ = token.split(".")
    header, claims = b64json(header_segment), b64json(claims_segment)
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())["vars"]
    now = int(time.time())
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    assert claims["sub"] == "user_ann" and claims["iss"] == config["CLERK_ISSUER"]
    assert claims["azp"] in [p.strip() for p in config["CLERK_AUTHORIZED_PARTIES"].split(",")]
    assert claims["nbf"] <= now <= claims["exp"] and claims["exp"] - claims["iat"] == 3600
    pem = public_key(project)
    assert verify(token, pem)
    # The check is not vacuous: a changed subject breaks the signature.
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "user_eve"}).encode()).rstrip(b"=").decode()
    assert not verify(f"{header_segment}.{forged}.{token.split('.')[2]}", pem)


def test_setup_again_keeps_the_key_so_old_tokens_stay_valid(project, ann_token):
    token = ann_token
    again = subprocess.run([NODE, "runtime/devsetup.mjs"], cwd=project, capture_output=True, text=True, check=False)
    assert again.returncode == 0
    assert verify(token, public_key(project))


def test_bad_user_or_role_is_refused(project):
    for args in (("ann smith",), ("",), ("x" * 41,), ("ann", "advisor")):
        run = make_token(project, *args)
        assert run.returncode == 2 and ("usage" in run.stderr or "ROLE" in run.stderr), (args, run.stderr)
        assert run.stdout == ""


def test_role_admin_makes_the_user_an_admin_in_local_d1(project, migrated):
    run = make_token(project, "root", "admin")
    assert run.returncode == 0, run.stderr
    assert verify(run.stdout.strip(), public_key(project))
    rows = migrated[""].query("""SELECT u.is_admin, a.kind FROM users u JOIN accounts a ON a.owner_user_id = u.id
                                 WHERE u.clerk_user_id = 'user_root'""")
    assert rows == [{"is_admin": 1, "kind": "client_wallet"}]


def test_env_staging_signs_for_staging_and_grants_admin_in_its_local_d1(project, migrated):
    run = make_token(project, "stagingroot", "admin", "staging")
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    claims = b64json(token.split(".")[1])
    staging = tomllib.loads((ROOT / "wrangler.toml").read_text())["env"]["staging"]["vars"]
    assert (
        claims["iss"]
        == staging["CLERK_ISSUER"]
        != tomllib.loads((ROOT / "wrangler.toml").read_text())["vars"]["CLERK_ISSUER"]
    )
    assert claims["azp"] in [p.strip() for p in staging["CLERK_AUTHORIZED_PARTIES"].split(",")]
    assert verify(token, public_key(project))
    query = "SELECT is_admin FROM users WHERE clerk_user_id = 'user_stagingroot'"
    assert migrated["staging"].query(query) == [{"is_admin": 1}]
    assert migrated[""].query(query) == []


def test_unknown_env_is_refused(project):
    run = make_token(project, "ann", "", "prod")
    assert run.returncode == 2 and "ENV" in run.stderr and run.stdout == ""
