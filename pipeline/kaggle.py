"""The one Kaggle client: download the competition files, submit a file, fetch its score.

Everything goes through the optional ``kaggle`` package (``pip install
'carvana-pipeline[kaggle]'``), an API token (``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``
and ``KAGGLE_KEY``), the competition rules accepted on kaggle.com, and a network connection;
each missing piece is reported as one line.

Downloads resume: a zip already extracted (a ``.<zip>.done`` marker beside the data) is
skipped, and a zip already downloaded is not fetched again.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

COMPETITION = "carvana-image-masking-challenge"
TRAIN_FILES = (
    "train.zip",
    "train_masks.zip",
    "train_masks.csv.zip",
    "metadata.csv.zip",
    "sample_submission.csv.zip",
)
TEST_FILES = ("test.zip",)  # 100064 images, 7.8 GB: only needed for a submission
INSTALL_HINT = "pip install 'carvana-pipeline[kaggle]'"


def credentials_found(env: dict | None = None, home: Path | None = None) -> bool:
    """True when the Kaggle client will find a token (environment or kaggle.json)."""
    env = os.environ if env is None else env
    if (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")) or env.get("KAGGLE_API_TOKEN"):
        return True
    home = Path.home() if home is None else home
    folders = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    folders += [home / ".kaggle", home / ".config" / "kaggle"]
    return any((d / "kaggle.json").is_file() or (d / "access_token").is_file() for d in folders)


def installed() -> bool:
    """Whether the optional ``kaggle`` package can be imported."""
    if "kaggle" in sys.modules:
        return sys.modules["kaggle"] is not None
    return importlib.util.find_spec("kaggle") is not None


def client(purpose: str = "this command", api: Any = None) -> Any:
    """An authenticated ``KaggleApi`` (or ``api`` as given: tests pass a fake); one-line errors
    for a missing package, a missing token or a refused one. ``purpose`` starts the messages."""
    if api is not None:
        return api
    if not installed():
        raise PipelineError(f"{purpose} needs the kaggle package: {INSTALL_HINT}")
    if not credentials_found():
        raise PipelineError(
            "no Kaggle API token: create one at https://www.kaggle.com/settings (API, Create New "
            "Token) and save it as ~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY"
        )
    try:
        # kaggle < 1.6 authenticates at import (and raises without a token)
        module = importlib.import_module("kaggle.api.kaggle_api_extended")
    except ImportError:
        raise PipelineError(f"{purpose} needs the kaggle package: {INSTALL_HINT}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - OSError, ValueError or exit
        raise PipelineError(_auth_error(exc)) from None
    try:
        api = module.KaggleApi()
        api.authenticate()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - OSError, ValueError or exit
        raise PipelineError(_auth_error(exc)) from None
    return api


def _auth_error(exc: BaseException) -> str:
    return (f"Kaggle authentication failed ({_first_line(exc)}); check ~/.kaggle/kaggle.json "
            "or KAGGLE_USERNAME/KAGGLE_KEY")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _status(exc: BaseException) -> int | None:
    """HTTP status of a client error, whatever client version raised it."""
    for obj in (exc, getattr(exc, "response", None)):
        for attr in ("status", "status_code"):
            value = getattr(obj, attr, None)
            if isinstance(value, int):
                return value
    return None


def _download_error(exc: BaseException, name: str, competition: str) -> PipelineError:
    status = _status(exc)
    if status in (401, 403):
        return PipelineError(
            f"Kaggle refused {name} (HTTP {status}): accept the competition rules at "
            f"https://www.kaggle.com/competitions/{competition}/rules with the account of "
            "your API token, then re-run"
        )
    if status == 404:
        return PipelineError(
            f"Kaggle has no file {name} in competition '{competition}' "
            "(HTTP 404); check the competition name"
        )
    names = " ".join(type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e)
    if isinstance(exc, (OSError, TimeoutError)) or any(
        k in names for k in ("Connection", "Timeout", "MaxRetry", "NameResolution")
    ):
        return PipelineError(
            f"cannot reach kaggle.com to download {name} "
            f"({_first_line(exc)}); check the network connection and re-run "
            "(finished files are kept)"
        )
    return PipelineError(
        f"downloading {name} from Kaggle failed ({_first_line(exc)}); re-run "
        "to retry (finished files are kept)"
    )


def _is_within(root: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def extract(archive: Path, root: Path) -> None:
    """Unzip ``archive`` into ``root`` (refusing members that would land outside it)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                if not _is_within(root, root / member.filename):
                    raise PipelineError(
                        f"{archive}: member {member.filename!r} would be "
                        "written outside the data folder; delete the zip"
                    )
            zf.extractall(root)
    except zipfile.BadZipFile:
        raise PipelineError(
            f"{archive}: not a valid zip (an interrupted download?); delete it and re-run"
        ) from None


def _marker(root: Path, name: str) -> Path:
    return root / f".{name}.done"


def download(
    root: str | Path,
    competition: str = COMPETITION,
    files: tuple[str, ...] = TRAIN_FILES,
    include_test: bool = False,
    keep_zips: bool = False,
    echo: Callable[[str], None] | None = print,
) -> Path:
    """Download ``files`` (plus ``test.zip`` when ``include_test``) and unzip them into ``root``.

    Zips hold ``train/``, ``train_masks/`` and ``test/`` folders or a single CSV, so ``root``
    ends up in Kaggle layout. Zips are deleted after extraction unless ``keep_zips``.
    """
    root = Path(root)
    names = tuple(files) + (TEST_FILES if include_test else ())
    todo = [n for n in names if not _marker(root, n).is_file()]
    if not todo:
        return root
    api = client("downloading the competition files")
    root.mkdir(parents=True, exist_ok=True)
    for name in todo:
        archive = root / name
        if not (archive.is_file() and zipfile.is_zipfile(archive)):
            if echo:
                echo(f"downloading {name} from kaggle.com/competitions/{competition}")
            try:
                api.competition_download_file(competition, name, path=str(root), quiet=False)
            except PipelineError:
                raise
            except Exception as exc:  # noqa: BLE001 - the client's HTTP and network errors
                raise _download_error(exc, name, competition) from None
            if not archive.is_file():
                raise PipelineError(
                    f"{archive}: the Kaggle client reported success but wrote "
                    "no file; re-run, or download it by hand into this folder"
                )
        if echo:
            echo(f"extracting {archive}")
        extract(archive, root)
        _marker(root, name).touch()
        if not keep_zips:
            archive.unlink()
    return root


def submit_file(path: str | Path, message: str, competition: str = COMPETITION,
                api: Any = None) -> None:
    """Submit ``path`` to the competition with ``message``."""
    api = client("--upload", api)
    try:
        api.competition_submit(str(path), message, competition)
    except Exception as exc:  # noqa: BLE001 -- network, credentials, rules: one line each
        raise PipelineError(f"kaggle upload of {path} failed: {_first_line(exc)}; check the "
                            "network, the token in ~/.kaggle/kaggle.json (or KAGGLE_USERNAME "
                            "and KAGGLE_KEY) and that the rules are accepted") from None


def fetch_score(submission: str | Path, competition: str = COMPETITION, api: Any = None) -> float:
    """The score Kaggle gave the newest submission of a file named like ``submission``.

    Prefers the private score (what the final leaderboard ranked), else the public one.
    """
    name = Path(submission).name
    api = client("--fetch-kaggle", api)
    try:
        submissions = api.competition_submissions(competition) or []
    except Exception as exc:  # noqa: BLE001 -- network, HTTP 401/403 (rules not accepted)
        raise PipelineError(f"kaggle: cannot list submissions to {competition} "
                            f"({_first_line(exc)})") from None
    matching = [s for s in submissions if _field(s, "fileName", "file_name") == name]
    if not matching:
        raise PipelineError(
            f"{name}: no submission with this file name among your {len(submissions)} "
            f"submissions to {competition}; submit it with `python -m pipeline.submit --upload` "
            f"or `kaggle competitions submit {competition} -f {submission} -m <message>`"
        )
    latest = matching[0]  # Kaggle lists submissions newest first
    value = _field(latest, "privateScore", "private_score", "publicScore", "public_score")
    try:
        return float(value)
    except (TypeError, ValueError):
        status = _field(latest, "status") or "unknown"
        raise PipelineError(
            f"{name}: Kaggle has no score for this submission yet (status: {status}); "
            "try again when it is scored"
        ) from None


def _field(sub: Any, *names: str) -> Any:
    """The first non-empty attribute of a submission (kaggle < 1.7 uses camelCase names, later
    versions snake_case; tests pass dicts)."""
    for n in names:
        value = sub.get(n) if isinstance(sub, dict) else getattr(sub, n, None)
        if value not in (None, ""):
            return value
    return None
