"""The one Kaggle client, offline: credentials, the client's checks in order, download and
extract with resume, one-line download errors, submitting a file and fetching its score."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import kaggle
from pipeline.data.__main__ import app as data_app
from pipeline.errors import PipelineError


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def _install_fake_kaggle(monkeypatch, api_class) -> None:
    """Make ``import kaggle.api.kaggle_api_extended`` give a module whose KaggleApi is
    ``api_class``."""
    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = api_class
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)


# --------------------------------------------------------------------------- credentials


def test_kaggle_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle, "installed", lambda: False)
    result = CliRunner().invoke(data_app, ["--source", "kaggle", "--out", str(tmp_path / "k")])
    assert result.exit_code == 1
    assert "pip install 'carvana-pipeline[kaggle]'" in _one_error_line(result)


def test_kaggle_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle, "installed", lambda: True)
    monkeypatch.setattr(kaggle, "credentials_found", lambda: False)
    with pytest.raises(PipelineError, match="kaggle.json.*KAGGLE_USERNAME"):
        kaggle.download(tmp_path)


def test_credentials_found(tmp_path):
    assert not kaggle.credentials_found(env={}, home=tmp_path)
    assert kaggle.credentials_found(env={"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home=tmp_path)
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text("{}")
    assert kaggle.credentials_found(env={}, home=tmp_path)


def test_credentials_found_in_the_other_places(tmp_path):
    home = tmp_path / "home"
    assert not kaggle.credentials_found(env={"KAGGLE_USERNAME": "u"}, home=home)  # no key
    assert kaggle.credentials_found(env={"KAGGLE_API_TOKEN": "t"}, home=home)
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "access_token").write_text("t")
    assert kaggle.credentials_found(env={"KAGGLE_CONFIG_DIR": str(config_dir)}, home=home)
    (home / ".config" / "kaggle").mkdir(parents=True)
    (home / ".config" / "kaggle" / "kaggle.json").write_text("{}")
    assert kaggle.credentials_found(env={}, home=home)


def test_installed_follows_the_import_machinery(monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # `import kaggle` -> ImportError
    assert not kaggle.installed()
    monkeypatch.setitem(sys.modules, "kaggle", types.ModuleType("kaggle"))
    assert kaggle.installed()


def test_client_checks_the_package_then_the_token_then_authenticates(monkeypatch):
    fake = object()
    assert kaggle.client("x", api=fake) is fake  # a given API is used as is

    monkeypatch.setattr(kaggle, "installed", lambda: False)
    with pytest.raises(PipelineError, match="^--upload needs the kaggle package: pip install"):
        kaggle.client("--upload")

    monkeypatch.setattr(kaggle, "installed", lambda: True)
    monkeypatch.setattr(kaggle, "credentials_found", lambda: False)
    with pytest.raises(PipelineError, match="^no Kaggle API token"):
        kaggle.client("--upload")

    class Refused:
        def authenticate(self):
            raise ValueError("401 Unauthorized\nsecond line")

    _install_fake_kaggle(monkeypatch, Refused)
    monkeypatch.setattr(kaggle, "credentials_found", lambda: True)
    with pytest.raises(PipelineError) as err:
        kaggle.client("--upload")
    message = str(err.value)
    assert message.startswith("Kaggle authentication failed (ValueError: 401 Unauthorized)")
    assert "\n" not in message

    class Accepted:
        def authenticate(self):
            pass

    _install_fake_kaggle(monkeypatch, Accepted)
    assert isinstance(kaggle.client("--upload"), Accepted)


# --------------------------------------------------------------------------- download


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


ARCHIVES = {
    "train.zip": {"train/0123456789ab_01.jpg": b"jpg"},
    "train_masks.zip": {"train_masks/0123456789ab_01_mask.gif": b"gif"},
    "train_masks.csv.zip": {"train_masks.csv": b"img,rle_mask\n"},
    "metadata.csv.zip": {"metadata.csv": b"id\n"},
    "sample_submission.csv.zip": {"sample_submission.csv": b"img,rle_mask\n"},
    "test.zip": {"test/0123456789ab_02.jpg": b"jpg"},
}


@pytest.fixture
def fake_kaggle(monkeypatch):
    """A stand-in ``kaggle`` package whose API writes small zips (or raises ``error``)."""
    calls: list[str] = []
    state = {"error": None}

    class KaggleApi:
        def authenticate(self):
            pass

        def competition_download_file(self, competition, file_name, path=None, quiet=False):
            calls.append(file_name)
            if state["error"] is not None:
                raise state["error"]
            _zip(Path(path) / file_name, ARCHIVES[file_name])

    _install_fake_kaggle(monkeypatch, KaggleApi)
    monkeypatch.setattr(kaggle, "credentials_found", lambda: True)
    return types.SimpleNamespace(calls=calls, state=state)


def test_kaggle_download_unzips_into_kaggle_layout(tmp_path, fake_kaggle):
    root = kaggle.download(tmp_path / "k", echo=None)
    assert (root / "train" / "0123456789ab_01.jpg").read_bytes() == b"jpg"
    assert (root / "train_masks" / "0123456789ab_01_mask.gif").is_file()
    for csv in ("train_masks.csv", "metadata.csv", "sample_submission.csv"):
        assert (root / csv).is_file()
    assert not list(root.glob("*.zip"))  # zips are removed once extracted
    assert not (root / "test").exists()  # test.zip only on request
    assert fake_kaggle.calls == list(kaggle.TRAIN_FILES)

    kaggle.download(root, include_test=True, echo=None)  # resumes: only the new file
    assert fake_kaggle.calls == [*kaggle.TRAIN_FILES, "test.zip"]
    assert (root / "test" / "0123456789ab_02.jpg").is_file()


def test_kaggle_download_reuses_a_downloaded_zip_and_can_keep_it(tmp_path, fake_kaggle):
    root = tmp_path / "k"
    root.mkdir()
    _zip(root / "train.zip", ARCHIVES["train.zip"])  # downloaded before an interruption
    lines: list[str] = []
    kaggle.download(root, files=("train.zip",), keep_zips=True, echo=lines.append)
    assert fake_kaggle.calls == []  # not fetched again
    assert (root / "train.zip").is_file() and (root / "train" / "0123456789ab_01.jpg").is_file()
    assert lines == [f"extracting {root / 'train.zip'}"]


def test_kaggle_client_reporting_success_without_a_file_is_an_error(tmp_path, monkeypatch):
    class Silent:
        def authenticate(self):
            pass

        def competition_download_file(self, competition, file_name, path=None, quiet=False):
            pass  # writes nothing

    _install_fake_kaggle(monkeypatch, Silent)
    monkeypatch.setattr(kaggle, "credentials_found", lambda: True)
    with pytest.raises(PipelineError, match="reported success but wrote no file"):
        kaggle.download(tmp_path / "k", files=("train.zip",), echo=None)


class _HTTPError(Exception):
    def __init__(self, status: int):
        super().__init__(f"({status}) Reason: refused")
        self.status = status


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionError("Max retries exceeded"), "cannot reach kaggle.com"),
        (_HTTPError(403), "accept the competition rules"),
        (_HTTPError(404), "check the competition name"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
def test_kaggle_download_errors_are_one_line(tmp_path, fake_kaggle, error, expected):
    fake_kaggle.state["error"] = error
    with pytest.raises(PipelineError) as info:
        kaggle.download(tmp_path / "k", echo=None)
    assert expected in str(info.value) and "train.zip" in str(info.value)
    assert "\n" not in str(info.value)


def test_kaggle_refuses_zip_members_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    _zip(archive, {"../outside.txt": b"x"})
    with pytest.raises(PipelineError, match="outside the data folder"):
        kaggle.extract(archive, tmp_path / "root")
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(PipelineError, match="not a valid zip"):
        kaggle.extract(tmp_path / "broken.zip", tmp_path / "root")


# --------------------------------------------------------------------------- submit


def test_upload_without_credentials_is_a_clear_error(tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def authenticate(self):
            raise OSError("Could not find kaggle.json. Make sure it's located in ~/.kaggle.\nMore")

        def competition_submit(self, *args):
            calls.append(args)

    _install_fake_kaggle(monkeypatch, FakeApi)
    # a token is present but refused: the client's last check
    monkeypatch.setattr(kaggle, "credentials_found", lambda: True)
    with pytest.raises(PipelineError) as err:
        kaggle.submit_file(tmp_path / "s.csv.gz", "msg")
    assert "Could not find kaggle.json" in str(err.value) and "\n" not in str(err.value)
    assert "KAGGLE_USERNAME" in str(err.value) and not calls
    FakeApi.authenticate = lambda self: None
    kaggle.submit_file(tmp_path / "s.csv.gz", "msg")
    assert calls == [(str(tmp_path / "s.csv.gz"), "msg", "carvana-image-masking-challenge")]


def test_upload_failure_is_one_line_naming_the_file(tmp_path):
    class Failing:
        def competition_submit(self, *args):
            raise ConnectionError("Max retries exceeded\nwith url")

    path = tmp_path / "s.csv.gz"
    with pytest.raises(PipelineError) as err:
        kaggle.submit_file(path, "msg", api=Failing())
    message = str(err.value)
    assert message.startswith(f"kaggle upload of {path} failed: ConnectionError: Max retries")
    assert "rules are accepted" in message and "\n" not in message


# --------------------------------------------------------------------------- fetch score


class _FakeApi:
    def __init__(self, subs):
        self.subs = subs

    def competition_submissions(self, competition):
        assert competition == kaggle.COMPETITION
        return self.subs


class _Sub:  # kaggle < 1.7 attribute names
    def __init__(self, fileName, privateScore, publicScore, status="complete"):
        self.fileName, self.privateScore, self.publicScore = fileName, privateScore, publicScore
        self.status = status


def test_fetch_kaggle_score_uses_the_newest_matching_private_score():
    api = _FakeApi([
        _Sub("submission.csv.gz", "0.99650", "0.99660"),
        _Sub("other.csv", "0.9", "0.9"),
        _Sub("submission.csv.gz", "0.99000", "0.99100"),
    ])
    assert kaggle.fetch_score("out/submission.csv.gz", api=api) == pytest.approx(0.9965)
    # snake_case attributes (kaggle >= 1.7) and only a public score
    snake = _FakeApi([{"file_name": "s.csv", "private_score": "", "public_score": "0.98"}])
    assert kaggle.fetch_score("s.csv", api=snake) == pytest.approx(0.98)
    with pytest.raises(PipelineError, match="no submission with this file name"):
        kaggle.fetch_score("missing.csv", api=api)
    pending = _FakeApi([_Sub("p.csv", None, None, status="pending")])
    with pytest.raises(PipelineError, match="no score for this submission yet"):
        kaggle.fetch_score("p.csv", api=pending)


def test_fetch_kaggle_without_package_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # makes `import kaggle...` fail
    monkeypatch.setitem(sys.modules, "kaggle.api", None)
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    with pytest.raises(PipelineError, match="needs the kaggle package"):
        kaggle.fetch_score("s.csv")


def test_fetch_score_when_listing_fails_is_one_line():
    class Refused:
        def competition_submissions(self, competition):
            raise _HTTPError(403)

    with pytest.raises(PipelineError) as err:
        kaggle.fetch_score("s.csv", api=Refused())
    assert str(err.value) == (f"kaggle: cannot list submissions to {kaggle.COMPETITION} "
                              "(_HTTPError: (403) Reason: refused)")
