"""vanta-cli secrets check: is every secrets file encrypted, sealed and keyed as
`.sops.yaml` says, and does no key name a variable run-with-secrets refuses?

It reads the files as they are (a pre-commit hook sees what is being committed), needs no
key and runs no sops, so it works in any CI. A problem names the file and, when there is
one, the key: a value that should be encrypted but is not an ENC[...] string (following
the file's own unencrypted_suffix / encrypted_suffix / *_regex settings, as sops does), a
file with no sops metadata or no MAC, or recipients other than those of the file's
`.sops.yaml` creation rule (fixed by `sops updatekeys`), or a file the broker would not
serve (YAML anchors or aliases, over 64 MiB, or a `secrets/*.enc.yaml` whose
name is no environment's; such YAML is never parsed). Files whose rules depend on
comments (encrypted_comment_regex, unencrypted_comment_regex) are checked for all but
plaintext values. A MAC's correctness needs the key: `sops decrypt` checks that. Key
names are never encrypted, so a key whose variable changes how a program starts
is found without a key too (`cli.run.variables`), unless the caller allows it by name.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.error import YAMLError

from broker.store.files import MISNAMED, SUFFIX, environment_of, load_yaml, refusal
from broker.store.sops import flatten
from cli.run.variables import allow_hint, refused_keys

SECRETS_DIR = "secrets"
CHECKED_SUFFIXES = (".yaml", ".yml", ".json")
CONFIG_NAME = ".sops.yaml"
ENC_RE = re.compile(
    r"ENC\[[A-Za-z0-9_]+,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,type:[a-z]+\]"
)


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the repository's top when inside it
    key: str | None
    reason: str

    def __str__(self) -> str:
        if self.key is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}: {self.key}: {self.reason}"


@dataclass(frozen=True)
class EncryptionRule:
    """Which values sops encrypts, from a file's metadata (sops.go shouldBeEncrypted)."""

    unencrypted_suffix: str = ""
    encrypted_suffix: str = ""
    unencrypted_regex: str = ""
    encrypted_regex: str = ""
    by_comments: bool = False

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> EncryptionRule:
        def text(name: str) -> str:
            value = metadata.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            text("unencrypted_suffix"),
            text("encrypted_suffix"),
            text("unencrypted_regex"),
            text("encrypted_regex"),
            bool(text("unencrypted_comment_regex") or text("encrypted_comment_regex")),
        )

    def encrypts(self, names: Sequence[str]) -> bool:
        encrypted = True
        if self.unencrypted_suffix and any(n.endswith(self.unencrypted_suffix) for n in names):
            encrypted = False
        if self.encrypted_suffix:
            encrypted = any(n.endswith(self.encrypted_suffix) for n in names)
        if self.unencrypted_regex and any(_search(self.unencrypted_regex, n) for n in names):
            encrypted = False
        if self.encrypted_regex:
            encrypted = any(_search(self.encrypted_regex, n) for n in names)
        return encrypted


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


# -- which files --------------------------------------------------------------------------------


def files_to_check(top: Path, paths: Sequence[Path]) -> list[Path]:
    """The named files (a directory stands for the YAML and JSON files under it), or with
    none named, every YAML and JSON file under `<top>/secrets/`."""
    if not paths:
        return _files_under(top / SECRETS_DIR)
    found: list[Path] = []
    for path in paths:
        found.extend(_files_under(path) if path.is_dir() else [path])
    return list(dict.fromkeys(found))


def _files_under(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.suffix in CHECKED_SUFFIXES and not p.name.startswith(".")
    )


def shown(top: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        return str(path)


# -- one file -------------------------------------------------------------------------------------


def check_file(top: Path, path: Path, allowed: Collection[str] = ()) -> list[Problem]:
    """Every problem of one file (none when it is a sound SOPS file whose keys name no
    refused variable outside `allowed`)."""
    name = shown(top, path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [Problem(name, None, "no such file")]
    except OSError as exc:
        return [Problem(name, None, f"cannot be read ({exc.strerror})")]
    reason = refusal(data)
    if reason is not None:
        return [Problem(name, None, f"{reason}, so the broker does not serve it")]
    problems: list[Problem] = []
    if _in_secrets_dir(top, path) and path.name.endswith(SUFFIX) and not environment_of(path.name):
        problems.append(Problem(name, None, f"{MISNAMED}, so the broker does not serve it"))
    try:
        document = load_yaml(data)
    except YAMLError:
        return [*problems, Problem(name, None, "not valid YAML or JSON, so not a SOPS file")]
    if not isinstance(document, Mapping):
        return [*problems, Problem(name, None, "not a mapping of keys, so not a SOPS file")]
    metadata = document.get("sops")
    if not isinstance(metadata, Mapping):
        problems.append(
            Problem(name, None, "no sops metadata: the file is not encrypted (sops encrypt -i)")
        )
        metadata = {}
    elif not (isinstance(metadata.get("mac"), str) and ENC_RE.fullmatch(metadata["mac"])):
        problems.append(Problem(name, None, "the sops metadata has no MAC"))
    rule = EncryptionRule.from_metadata(metadata)
    body = {k: v for k, v in document.items() if k != "sops"}
    if not rule.by_comments:
        problems.extend(Problem(name, key, "plaintext value") for key in plaintext_keys(body, rule))
    if metadata:
        problems.extend(_recipient_problems(top, path, name, metadata))
    problems.extend(
        Problem(
            name,
            refused.key,
            f"becomes {refused.name}, a variable that changes how a program starts, which "
            f"run-with-secrets refuses to set: rename the key, or allow it with "
            f"{allow_hint([refused])}",
        )
        for refused in refused_keys(flatten(body), allowed)
    )
    return problems


def _in_secrets_dir(top: Path, path: Path) -> bool:
    return path.resolve().parent == (top / SECRETS_DIR).resolve()


def plaintext_keys(document: Mapping[Any, Any], rule: EncryptionRule) -> list[str]:
    """Keys (list items as `key/0`) whose value sops would encrypt but is not ENC[...]."""
    found: list[str] = []

    def walk(node: Any, names: list[str], shown_path: list[str]) -> None:
        if isinstance(node, Mapping):
            for name, value in node.items():
                text = str(name).lower() if isinstance(name, bool) else str(name)
                walk(value, [*names, text], [*shown_path, text])
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, names, [*shown_path, str(index)])
        elif node is not None and rule.encrypts(names):
            if not (isinstance(node, str) and ENC_RE.fullmatch(node)):
                found.append("/".join(shown_path))

    walk(document, [], [])
    return found


# -- recipients ---------------------------------------------------------------------------------


def _recipient_problems(
    top: Path, path: Path, name: str, metadata: Mapping[str, Any]
) -> list[Problem]:
    config = find_config(path.resolve().parent)
    if config is None:
        return [Problem(name, None, f"no {CONFIG_NAME} to compare its recipients with")]
    try:
        rules = load_creation_rules(config)
    except ValueError as exc:
        return [Problem(name, None, str(exc))]
    relative = path.resolve().relative_to(config.parent).as_posix()
    rule = next((r for r in rules if _rule_matches(r, relative)), None)
    if rule is None:
        return [Problem(name, None, f"no {CONFIG_NAME} creation rule matches this file")]
    expected = rule_recipients(rule)
    if not expected:
        return []  # the rule leaves the keys to the command line: nothing to compare
    actual = file_recipients(metadata)
    if actual == expected:
        return []
    missing = ", ".join(sorted(f"{kind} {ident}" for kind, ident in expected - actual))
    extra = ", ".join(sorted(f"{kind} {ident}" for kind, ident in actual - expected))
    parts = [f"missing {missing}" if missing else "", f"not in it {extra}" if extra else ""]
    detail = "; ".join(p for p in parts if p)
    return [
        Problem(
            name,
            None,
            f"encrypted to recipients that differ from {CONFIG_NAME} ({detail}): "
            f"run `sops updatekeys {name}`",
        )
    ]


def find_config(start: Path) -> Path | None:
    """The nearest `.sops.yaml` at or above `start` (as sops looks from where it runs)."""
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_creation_rules(config: Path) -> list[Mapping[str, Any]]:
    """The creation rules of a `.sops.yaml`; ValueError naming the file if unusable."""
    try:
        document = load_yaml(config.read_bytes())
    except (OSError, YAMLError):
        raise ValueError(f"{config.name} cannot be read as YAML") from None
    rules = document.get("creation_rules") if isinstance(document, Mapping) else None
    if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
        raise ValueError(f"{config.name} has no creation_rules list")
    return rules


def _rule_matches(rule: Mapping[str, Any], relative: str) -> bool:
    pattern = rule.get("path_regex")
    if not pattern:
        return True  # sops: a rule without path_regex matches every file
    return _search(str(pattern), relative)


def _split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return []


def _pgp(fingerprint: str) -> str:
    return fingerprint.replace(" ", "").upper()


def _azure(url: str) -> str:
    # https://vault.vault.azure.net/keys/name[/version]: compared without the version
    match = re.match(r"(https?://[^/]+)/keys/([^/]+)", url.strip())
    return f"{match[1]}/keys/{match[2]}" if match else url.strip()


def rule_recipients(rule: Mapping[str, Any]) -> set[tuple[str, str]]:
    """Every (kind, id) a creation rule encrypts to, over its key groups if it has them."""
    groups = rule.get("key_groups")
    if isinstance(groups, list) and groups:
        return set().union(*(_group_recipients(g) for g in groups if isinstance(g, Mapping)))
    found = {("age", r) for r in _split(rule.get("age"))}
    found |= {("pgp", _pgp(r)) for r in _split(rule.get("pgp"))}
    found |= {("kms", r.split("+")[0]) for r in _split(rule.get("kms"))}
    found |= {("gcp_kms", r) for r in _split(rule.get("gcp_kms"))}
    found |= {("azure_kv", _azure(r)) for r in _split(rule.get("azure_keyvault"))}
    found |= {("hc_vault", r.rstrip("/")) for r in _split(rule.get("hc_vault_transit_uri"))}
    found |= {("hckms", r) for r in _split(rule.get("hckms"))}
    return found


def _entries(group: Mapping[str, Any], name: str) -> list[Any]:
    value = group.get(name)
    return value if isinstance(value, list) else []


def _field(entry: Any, name: str) -> str:
    return str(entry.get(name, "")).strip() if isinstance(entry, Mapping) else ""


def _group_recipients(group: Mapping[str, Any]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for merged in _entries(group, "merge"):
        if isinstance(merged, Mapping):
            found |= _group_recipients(merged)
    found |= {("age", r) for e in _entries(group, "age") for r in _split(str(e))}
    found |= {("pgp", _pgp(str(e))) for e in _entries(group, "pgp")}
    found |= {("kms", _field(e, "arn")) for e in _entries(group, "kms")}
    found |= {("gcp_kms", _field(e, "resource_id")) for e in _entries(group, "gcp_kms")}
    found |= {
        ("azure_kv", f"{_field(e, 'vaultUrl').rstrip('/')}/keys/{_field(e, 'key')}")
        for e in _entries(group, "azure_keyvault")
    }
    found |= {("hc_vault", str(e).strip().rstrip("/")) for e in _entries(group, "hc_vault")}
    found |= {("hckms", _field(e, "key_id")) for e in _entries(group, "hckms")}
    return found


def file_recipients(metadata: Mapping[str, Any]) -> set[tuple[str, str]]:
    """Every (kind, id) a file's sops metadata says it is encrypted to."""
    groups = metadata.get("key_groups")
    sources: Iterable[Any] = groups if isinstance(groups, list) and groups else [metadata]
    found: set[tuple[str, str]] = set()
    for group in sources:
        if not isinstance(group, Mapping):
            continue
        found |= {("age", _field(e, "recipient")) for e in _entries(group, "age")}
        found |= {("pgp", _pgp(_field(e, "fp"))) for e in _entries(group, "pgp")}
        found |= {("kms", _field(e, "arn")) for e in _entries(group, "kms")}
        found |= {("gcp_kms", _field(e, "resource_id")) for e in _entries(group, "gcp_kms")}
        found |= {
            ("azure_kv", f"{_field(e, 'vault_url').rstrip('/')}/keys/{_field(e, 'name')}")
            for e in _entries(group, "azure_kv")
        }
        found |= {
            (
                "hc_vault",
                f"{_field(e, 'vault_address').rstrip('/')}/v1/{_field(e, 'engine_path')}"
                f"/keys/{_field(e, 'key_name')}",
            )
            for e in _entries(group, "hc_vault")
        }
        found |= {("hckms", _field(e, "key_id")) for e in _entries(group, "hckms")}
    return found


def check_paths(
    top: Path, paths: Sequence[Path], allowed: Collection[str] = ()
) -> tuple[list[Path], list[Problem]]:
    """(the files checked, their problems in file order); variables in `allowed` may be
    set from a key."""
    files = files_to_check(top, paths)
    problems = [problem for path in files for problem in check_file(top, path, allowed)]
    return files, problems
