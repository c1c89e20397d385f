"""README "Configuration" against the binaries, the way curl's test 1139 holds its manual
to its code: every variable a binary's `--help` lists must be in the README's tables for
that binary, every variable the tables give a binary must be in its `--help`, and where a
table states a default it must be the binary's. No servers: each built binary
($OMS_BUILD_DIR/oms-<service>) only runs `--help`.

How the tables are read (README "Configuration", up to the next "## " heading):
* a row's variables are the `BACKTICKED_UPPER_CASE` names in its "variable" column
  (aliases are listed as rows of their own);
* a table with a "service" or "services" column gives each row to the services named
  there ("every" or "all": the five); a table without one is for every service;
* the "default" column is compared when it holds one value per variable: `value` or
  "—" (empty), in the order of the variables; text around them (units, notes) is
  ignored; `<service>` inside a default stands for the binary's name.
"""
import os
import re
import subprocess

import pytest

from oms_harness import BUILD, SRC

SERVICES = ["gateway", "orders", "stock", "payments", "kitchen"]
README = os.path.join(SRC, "README.md")
NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")
DEFAULT_ITEM = re.compile(r"`([^`]*)`|—")


def config_section():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Configuration\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Configuration' section"
    return m.group(1)


def split_row(line):
    # Cells never hold a '|' of their own in this section (defaults use ',' and '/').
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(section):
    """Each markdown table as (header cells lowercased, rows of cells)."""
    out, block = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            header = [c.lower() for c in split_row(block[0])]
            out.append((header, [split_row(l) for l in block[2:]]))
        block = []
    return out


def services_of(cell):
    words = re.findall(r"[a-z]+", cell.lower())
    if "every" in words or "all" in words:
        return list(SERVICES)
    named = [w for w in words if w in SERVICES]
    assert named, f"no service named in {cell!r}"
    return named


def documented():
    """{service: {variable: default or None}} from the README's tables."""
    docs = {s: {} for s in SERVICES}
    found = tables(config_section())
    assert found, "no table in README's Configuration section"
    for header, rows in found:
        assert "variable" in header, f"a Configuration table without a 'variable' column: {header}"
        var_col = header.index("variable")
        svc_col = next((header.index(h) for h in ("service", "services") if h in header), None)
        def_col = header.index("default") if "default" in header else None
        for row in rows:
            assert len(row) == len(header), f"row does not match its header {header}: {row}"
            names = NAME.findall(row[var_col])
            assert names, f"a row without a variable: {row}"
            defaults = [None] * len(names)
            if def_col is not None:
                items = [m.group(1) if m.group(1) is not None else ""
                         for m in DEFAULT_ITEM.finditer(row[def_col])]
                if len(items) == len(names):
                    defaults = items
            for svc in (services_of(row[svc_col]) if svc_col is not None else SERVICES):
                for name, default in zip(names, defaults):
                    if default is not None:
                        default = default.replace("<service>", svc)
                    assert name not in docs[svc] or docs[svc][name] in (None, default), (
                        f"{name} is documented twice for {svc} with different defaults")
                    docs[svc][name] = default
    return docs


def from_help(svc):
    """{variable: default} from `oms-<svc> --help` (an alias has its variable's default)."""
    exe = os.path.join(BUILD, f"oms-{svc}")
    if not os.path.exists(exe):
        pytest.skip(f"oms-{svc} not built in {BUILD}")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    table = {}
    for line in out.splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]+)\s+(\S+)\s", line)
        if not m or m.group(1) == "NAME":
            continue
        default = "" if m.group(2) == '""' else m.group(2)
        table[m.group(1)] = default
        for alias in re.findall(r"\[alias: ([A-Z0-9_]+)\]", line):
            table[alias] = default
    assert len(table) > 10, out
    return table


@pytest.fixture(scope="module")
def docs():
    return documented()


@pytest.mark.parametrize("svc", SERVICES)
def test_readme_lists_every_variable_of_the_binary(docs, svc):
    missing = sorted(set(from_help(svc)) - set(docs[svc]))
    assert not missing, (f"oms-{svc} --help lists {missing}, but README's Configuration "
                         f"tables do not give them to {svc}")


@pytest.mark.parametrize("svc", SERVICES)
def test_binary_reads_every_variable_the_readme_gives_it(docs, svc):
    extra = sorted(set(docs[svc]) - set(from_help(svc)))
    assert not extra, (f"README's Configuration tables give {extra} to {svc}, but "
                       f"oms-{svc} --help does not list them")


@pytest.mark.parametrize("svc", SERVICES)
def test_readme_defaults_are_the_binary_defaults(docs, svc):
    actual = from_help(svc)
    wrong = {name: (doc, actual[name]) for name, doc in docs[svc].items()
             if doc is not None and name in actual and doc != actual[name]}
    assert not wrong, f"{svc}: README default != --help default: {wrong}"


def test_the_parser_sees_the_tables(docs):
    """Guards the test itself: a README reshaped so that nothing parses must not pass."""
    assert all(len(docs[s]) > 20 for s in SERVICES), {s: len(v) for s, v in docs.items()}
    assert docs["stock"].get("RESERVATION_TTL") is not None, "defaults are not being read"
