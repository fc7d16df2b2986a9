"""Download the Carvana competition files from Kaggle and unzip them into Kaggle layout.

Needs the optional ``kaggle`` package (``pip install 'carvana-pipeline[kaggle]'``), an API token
(``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY``), the competition rules
accepted on kaggle.com, and a network connection. Each missing piece is reported as one line.

Resumable: a zip already extracted (a ``.<zip>.done`` marker beside the data) is skipped, and a
zip already downloaded is not fetched again.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

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
RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"


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
    """True when the optional ``kaggle`` package can be imported."""
    return "kaggle" in sys.modules or importlib.util.find_spec("kaggle") is not None


def _api():
    """An authenticated ``KaggleApi``; one-line errors for a missing package or token."""
    if not installed():
        raise PipelineError(f"the 'kaggle' package is not installed; run: {INSTALL_HINT}")
    if not credentials_found():
        raise PipelineError(
            "no Kaggle API token: create one at https://www.kaggle.com/settings (API, Create New "
            "Token) and save it as ~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY"
        )
    try:
        # Importing the package authenticates already (and raises without a token).
        module = importlib.import_module("kaggle.api.kaggle_api_extended")
        api = module.KaggleApi()
        api.authenticate()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - OSError, ValueError or exit
        raise PipelineError(
            f"Kaggle authentication failed ({_first_line(exc)}); check "
            "~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY"
        ) from None
    return api


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
    api = _api()
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
