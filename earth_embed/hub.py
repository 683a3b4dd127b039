"""Hugging Face Hub plumbing: find a model's files, load safetensors only, render the model card."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import EarthConfig
from .errors import ModelNotFoundError, WeightsError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_TEMPLATE_DIRS = (
    Path(__file__).parent / "model_cards",  # installed wheel (force-included)
    Path(__file__).resolve().parent.parent / "model_cards",  # source checkout
)


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _looks_like_path(name: str) -> bool:
    return _REPO_ID.fullmatch(name) is None


def _hub_file(repo_id: str, filename: str, **kwargs: Any) -> str:
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, **kwargs)
    except LocalEntryNotFoundError as err:
        from huggingface_hub import constants

        revision = kwargs.get("revision")
        what = f"{repo_id!r} ({filename}" + (f", revision {revision!r})" if revision else ")")
        no_folder = f"or pass the path of a local model folder (no folder {repo_id!r} exists here)"
        if kwargs.get("local_files_only") or constants.HF_HUB_OFFLINE:
            switch = "local_files_only=True" if kwargs.get("local_files_only") else "HF_HUB_OFFLINE=1"
            raise ModelNotFoundError(
                f"{what} is not in the local Hugging Face cache and downloading is off ({switch}). Download it once "
                f"while online (`hf download {repo_id}"
                + (f" --revision {revision}" if revision else "")
                + f"`), {no_folder}."
            ) from err
        raise ModelNotFoundError(
            f"Cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to fetch {what}, and no copy is in the local "
            f"cache. Check the network connection (and HF_ENDPOINT), {no_folder}."
        ) from err
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(
            f"No model repository {repo_id!r} on the Hub (or it is private). Check the name, or log in "
            "with `hf auth login`; for a local folder, pass an existing directory path."
        ) from err
    except RevisionNotFoundError as err:
        raise ModelNotFoundError(
            f"Revision {kwargs.get('revision')!r} does not exist in {repo_id!r}; pass an existing branch, tag or commit."
        ) from err


def resolve_model_files(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[Path, Path]:
    """Paths of ``config.json`` and ``model.safetensors`` for a local folder or a Hub repo id.

    Hub ids go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, revisions).
    Pickle weights are refused: they are never downloaded nor unpickled.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        config, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not config.is_file():
            raise ModelNotFoundError(
                f"{path} has no {CONFIG_FILE}: it is not an earth-embed model folder. "
                "Point at a folder written by save_pretrained."
            )
        if not weights.is_file():
            pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            raise WeightsError(_missing_weights_message(str(path), pickles))
        return config, weights
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is a file; pass the model folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}."
        )
    if isinstance(name_or_path, Path) or _looks_like_path(name):
        raise ModelNotFoundError(f"No model folder at {path}; check the path (it is not a Hub repo id either).")
    kwargs = dict(
        revision=revision,
        cache_dir=cache_dir,
        force_download=force_download,
        local_files_only=local_files_only,
        token=token,
    )
    try:
        config_file = _hub_file(name, CONFIG_FILE, **kwargs)
    except HFValidationError as err:
        raise ModelNotFoundError(
            f"{name!r} is neither an existing folder nor a valid Hub repo id ('org/name')."
        ) from err
    except EntryNotFoundError as err:
        raise ModelNotFoundError(f"Hub repo {name!r} has no {CONFIG_FILE}: it is not an earth-embed model.") from err
    try:
        weights_file = _hub_file(name, WEIGHTS_FILE, **kwargs)
    except EntryNotFoundError as err:
        raise WeightsError(_missing_weights_message(name, [])) from err
    return Path(config_file), Path(weights_file)


def _missing_weights_message(where: str, pickles: list[str]) -> str:
    found = f" It holds pickle file(s) {pickles}, which earth-embed refuses to unpickle (unsafe)." if pickles else ""
    return (
        f"{where} has no {WEIGHTS_FILE}.{found} earth-embed loads weights from safetensors only: convert them "
        "with `safetensors.torch.save_file(state_dict, 'model.safetensors')` from a trusted environment."
    )


def load_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle)."""
    try:
        return load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(
            f"{weights} is not a readable safetensors file ({err}). Re-save the model with save_pretrained."
        ) from err


def apply_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``model``; a mismatch names the first offending keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} of the wrong shape (e.g. {wrong_shape[:2]})")
        raise WeightsError(
            f"The weights in {source} do not fit the architecture in its config.json: "
            + "; ".join(parts)
            + ". config.json and model.safetensors must come from the same save_pretrained call."
        )
    model.load_state_dict(state, strict=True)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the model's state dict as safetensors."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "library": "earth-embed"})


def weights_sha256(model: torch.nn.Module) -> str:
    """``sha256:<hex>`` of the model's weights as they are now (every state-dict entry: name, dtype, shape and
    bytes, in name order): the model's identity in outputs, the same wherever its folder lies or whether it was
    loaded or built in memory (about 0.05 s for the released encoder's 14.5 MB)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return f"sha256:{h.hexdigest()}"


def render_card(config: EarthConfig, template: str, **extra: Any) -> ModelCard:
    """Render a model card from ``model_cards/<template>.md`` with the config's facts."""
    from .bands import S2_BANDS
    from .version import __version__

    for folder in _TEMPLATE_DIRS:
        path = folder / f"{template}.md"
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"model card template {template}.md not found in {[str(d) for d in _TEMPLATE_DIRS]}")
    norm = config.normalization
    bands = [
        {
            "name": b,
            "wavelength_nm": S2_BANDS[b].wavelength_nm,
            "resolution_m": S2_BANDS[b].resolution_m,
            "mean": norm.mean[i],
            "std": norm.std[i],
        }
        for i, b in enumerate(config.bands)
    ]
    meta = dict(config.metadata)
    card_data = ModelCardData(
        license=config.license,
        library_name="earth-embed",
        tags=[
            "earth-observation",
            "sentinel-2",
            "self-supervised",
            "remote-sensing",
            "image-segmentation" if config.kind == "segmenter" else "feature-extraction",
        ],
        pipeline_tag="image-segmentation" if config.kind == "segmenter" else "image-feature-extraction",
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(path),
        config=config,
        bands=bands,
        meta=meta,
        repo_id=extra.pop("repo_id", None) or config.name or "path/to/model",
        version=__version__,
        classes=list(zip(config.classes or [], config.class_colors or [[0, 0, 0]] * len(config.classes or []))),
        **extra,
    )


class EarthHubMixin(PyTorchModelHubMixin):
    """PyTorchModelHubMixin with earth-embed's contract: config.json + model.safetensors + README.md card."""

    config: EarthConfig
    _card_template = "encoder"

    def _save_pretrained(self, save_directory: Path) -> None:
        save_directory = Path(save_directory)
        save_weights(self, save_directory / WEIGHTS_FILE)  # type: ignore[arg-type]
        self.config.save(save_directory / CONFIG_FILE)
        card = render_card(self.config, self._card_template, weights_sha256=weights_sha256(self))  # type: ignore[arg-type]
        card.save(save_directory / CARD_FILE)

    @classmethod
    def _model_from_config(cls, config: EarthConfig, state: dict[str, torch.Tensor], source: str):
        raise NotImplementedError

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
    ):
        """Load from a local folder or a Hub repo id ("org/name"), safetensors only; returns an eval-mode model."""
        config_path, weights_path = resolve_model_files(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        config = EarthConfig.load(config_path)
        state = load_state_dict(weights_path)
        model = cls._model_from_config(config, state, str(pretrained_model_name_or_path))
        model.name_or_path = str(pretrained_model_name_or_path)  # where it came from, for output tags
        model.revision = revision
        return model.to(map_location).eval()
