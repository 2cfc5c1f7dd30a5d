"""The edge gateway runs without the platform: nothing under shopfloor.edge, nor the
``shopfloor edge`` commands, imports the platform's libraries or layers.

An import hook in a fresh interpreter refuses those modules, as a box with only
``pip install shopfloor[edge]`` would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = (
    "pyarrow",
    "duckdb",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "shopfloor.api",
    "shopfloor.historian",
    "shopfloor.registry",
    "shopfloor.ingest",
    "shopfloor.interop",
)

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    BLOCKED = {blocked!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"edge imported platform module {{name}}")
            return None

    sys.meta_path.insert(0, Refuse())
    import shopfloor.edge
    names = []
    for mod in pkgutil.walk_packages(shopfloor.edge.__path__, "shopfloor.edge."):
        importlib.import_module(mod.name)
        names.append(mod.name)
    from typer.testing import CliRunner
    from shopfloor.cli.main import app
    result = CliRunner().invoke(app, ["edge", "--help"])
    assert result.exit_code == 0, result.output
    print(len(names), " ".join(sorted(names)))
    """
)


def test_edge_imports_no_platform_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    count, names = out.stdout.split(" ", 1)
    # Every connector and uplink was imported, not just the package itself.
    for needed in (
        "shopfloor.edge.runtime",
        "shopfloor.edge.buffer",
        "shopfloor.edge.connectors.modbus.connector",
        "shopfloor.edge.connectors.opcua.connector",
        "shopfloor.edge.connectors.s7.connector",
        "shopfloor.edge.connectors.mqtt_json.connector",
        "shopfloor.edge.connectors.simulator.connector",
        "shopfloor.edge.uplinks.http",
        "shopfloor.edge.uplinks.sparkplug",
    ):
        assert needed in names.split(), needed
    assert int(count) >= 9


def test_platform_commands_say_which_extra_is_missing() -> None:
    script = textwrap.dedent(
        """
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "duckdb" else real(name, *a)
        from typer.testing import CliRunner
        from shopfloor.cli.main import app
        r = CliRunner().invoke(app, ["up", "--data-dir", sys.argv[1]])
        print(r.exit_code)
        print(r.output)
        """
    )
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            [sys.executable, "-c", script, d], capture_output=True, text=True, timeout=60
        )
    code, _, text = out.stdout.partition("\n")
    assert code == "2", out.stdout + out.stderr
    assert "shopfloor[platform]" in " ".join(text.split())
    assert "duckdb" in text
