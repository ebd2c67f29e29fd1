"""The policy bounds the OpenAPI document publishes (clairvora.config) are the
ones every environment configures, so a schema-valid amount or rate is never
refused in any of them."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOUNDS = ("DEPOSIT_MIN_CENTS", "DEPOSIT_MAX_CENTS", "RATE_MIN_CENTS_PER_MINUTE", "RATE_MAX_CENTS_PER_MINUTE")


def _published() -> dict[str, int]:
    # config.py is Worker code (imports nothing host-only here, but read it as text to stay independent).
    text = (ROOT / "src" / "clairvora" / "config.py").read_text()
    return {name: int(re.search(rf"^{name} = (\d+)$", text, re.M).group(1)) for name in BOUNDS}


def test_every_environment_configures_the_published_bounds():
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    published = _published()
    for env_name, env_vars in [("local", config["vars"])] + [
        (n, config["env"][n]["vars"]) for n in ("staging", "production")
    ]:
        for name in BOUNDS:
            assert int(env_vars[name]) == published[name], (
                f"{env_name}: {name}={env_vars[name]} but the document says {published[name]}"
            )
