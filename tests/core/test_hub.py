"""Hub round-trip: local folders, the real huggingface_hub client against a loopback server, offline cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from earth_embed import EarthEncoder, EarthSegmenter
from earth_embed.errors import ConfigError, ModelNotFoundError, WeightsError
from earth_embed.hub import weights_sha256
from tests.helpers.hub_server import HubServer

BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture(scope="module")
def encoder() -> EarthEncoder:
    torch.manual_seed(0)
    return EarthEncoder.new("unet-resnet18", bands=BANDS, embed_dim=16, name="earth-embed/test-r18").eval()


@pytest.fixture(scope="module")
def saved(encoder, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "earth-embed-test"
    encoder.save_pretrained(folder)
    return folder


def _dn(h: int = 48, w: int = 40) -> torch.Tensor:
    return torch.randint(1, 5000, (2, len(BANDS), h, w), generator=torch.Generator().manual_seed(1)).float()


def test_save_load_bit_identical_and_no_pickle(encoder, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = EarthEncoder.from_pretrained(saved)
    with torch.no_grad():
        assert torch.equal(encoder.embed(_dn()), loaded.embed(_dn()))
    assert loaded.bands == BANDS and loaded.embed_dim == 16
    assert loaded.name_or_path == str(saved) and loaded.revision is None
    assert weights_sha256(loaded) == weights_sha256(encoder)  # the identity survives a save and a load
    for file in saved.iterdir():
        assert not file.read_bytes().startswith(b"\x80"), f"{file} looks like a pickle"


def test_model_card_states_the_facts(saved):
    card = (saved / "README.md").read_text()
    assert "library_name: earth-embed" in card
    for fact in ["B02", "B08", "unet-resnet18", "16-dimensional", "earth-embed/test-r18", "dn_offset=-1000"]:
        assert fact in card, fact
    assert f"| weights | `{weights_sha256(EarthEncoder.from_pretrained(saved))}`" in card  # what outputs record


def test_config_json_carries_bands_normalisation_version(saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["bands"] == BANDS
    assert config["normalization"]["dn_scale"] == 10000.0
    assert config["version"] == 1 and config["kind"] == "encoder" and config["embed_dim"] == 16


def test_pickle_weights_refused_without_unpickling(saved, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((saved / "config.json").read_text())
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"x": Boom()}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="safetensors only") as err:
        EarthEncoder.from_pretrained(folder)
    assert "pytorch_model.bin" in str(err.value)
    assert not marker.exists()


def test_pickle_renamed_as_safetensors_is_refused(saved, tmp_path):
    folder = tmp_path / "disguised"
    folder.mkdir()
    (folder / "config.json").write_text((saved / "config.json").read_text())
    torch.save({"a": torch.zeros(1)}, folder / "model.safetensors")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        EarthEncoder.from_pretrained(folder)


def _edited_copy(saved: Path, folder: Path, **config) -> Path:
    """A copy of the saved model folder with ``config`` changed in its config.json."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(json.loads((saved / "config.json").read_text()) | config))
    (folder / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    return folder


def test_config_weights_mismatch(saved, tmp_path):
    folder = _edited_copy(saved, tmp_path / "mismatch", embed_dim=32)
    with pytest.raises(WeightsError, match="wrong shape"):
        EarthEncoder.from_pretrained(folder)
    save_file({"foo": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="missing"):
        EarthEncoder.from_pretrained(folder)


def test_unknown_architecture_in_config(saved, tmp_path):
    folder = _edited_copy(saved, tmp_path / "unknown", version=99)
    with pytest.raises(ConfigError, match="upgrade earth-embed"):
        EarthEncoder.from_pretrained(folder)


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="No model folder"):
        EarthEncoder.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="not an earth-embed model folder"):
        EarthEncoder.from_pretrained(tmp_path)


def test_segmenter_round_trip_and_encoder_extraction(encoder, tmp_path):
    seg = EarthSegmenter.from_encoder(encoder, classes=["farm", "forest", "water"]).eval()
    seg.save_pretrained(tmp_path / "seg")
    loaded = EarthSegmenter.from_pretrained(tmp_path / "seg")
    with torch.no_grad():
        assert torch.equal(seg.class_scores(_dn()), loaded.class_scores(_dn()))
        assert torch.equal(EarthEncoder.from_pretrained(tmp_path / "seg").embed(_dn()), encoder.embed(_dn()))
    assert loaded.classes == ["farm", "forest", "water"]
    assert "| 3 | water |" in (tmp_path / "seg" / "README.md").read_text()
    encoder.save_pretrained(tmp_path / "enc")
    with pytest.raises(ConfigError, match="from_encoder"):
        EarthSegmenter.from_pretrained(tmp_path / "enc")


LOAD_SCRIPT = """
import os, sys, torch
if os.environ.get("EARTH_EMBED_TEST_THREADS"):  # the parent's thread count: bit-identical results need it
    torch.set_num_threads(int(os.environ["EARTH_EMBED_TEST_THREADS"]))
from earth_embed import EarthEncoder
from earth_embed.errors import ModelNotFoundError
try:
    m = EarthEncoder.from_pretrained(sys.argv[1], revision=(sys.argv[2] if len(sys.argv) > 3 else None))
except ModelNotFoundError as err:
    print("ERROR", err)
    sys.exit(3)
dn = torch.randint(1, 5000, (2, 4, 48, 40), generator=torch.Generator().manual_seed(1)).float()
with torch.no_grad():
    torch.save(m.embed(dn), sys.argv[-1])
print("OK", m.bands, m.embed_dim)
"""


def _load_in_subprocess(repo_id: str, env: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE at import, so each setting gets its own process."""
    return subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, repo_id, *extra, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_hub_id_through_loopback_server_then_offline_cache(encoder, saved, tmp_path):
    cache = tmp_path / "hf-cache"
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "EARTH_EMBED_TEST_THREADS": str(torch.get_num_threads()),
    }
    env.pop("HF_HUB_OFFLINE", None)
    with HubServer({"earth-embed/test-r18": saved}) as hub:
        online = _load_in_subprocess("earth-embed/test-r18", {**env, "HF_ENDPOINT": hub.endpoint}, tmp_path / "a.pt")
        assert online.returncode == 0, online.stdout + online.stderr
        assert any("resolve/main/model.safetensors" in r for r in hub.requests)
        with_rev = _load_in_subprocess(
            "earth-embed/test-r18", {**env, "HF_ENDPOINT": hub.endpoint}, tmp_path / "r.pt", "a" * 40
        )
        assert with_rev.returncode == 0, with_rev.stdout + with_rev.stderr
    # Server gone: the cached copy must serve offline, bit-identical to the in-process model.
    offline_env = {**env, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}
    offline = _load_in_subprocess("earth-embed/test-r18", offline_env, tmp_path / "b.pt")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    with torch.no_grad():
        expected = encoder.embed(
            torch.randint(1, 5000, (2, 4, 48, 40), generator=torch.Generator().manual_seed(1)).float()
        )
    assert torch.equal(torch.load(tmp_path / "a.pt"), expected)
    assert torch.equal(torch.load(tmp_path / "b.pt"), expected)
    # An id that was never cached fails offline with a message that says what to do.
    missing = _load_in_subprocess("earth-embed/never-cached", offline_env, tmp_path / "c.pt")
    assert missing.returncode == 3, missing.stdout + missing.stderr
    assert "not in the local Hugging Face cache" in missing.stdout and "hf download" in missing.stdout


def test_hub_messages_name_the_real_cause(saved, tmp_path):
    """Finding 9: a missing revision is called missing (not 'not in the cache'), and with no network the
    message says the Hub cannot be reached (not that HF_HUB_OFFLINE is set)."""
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    env.pop("HF_HUB_OFFLINE", None)

    def start(repo_id: str, endpoint: str, out: str, *extra: str) -> subprocess.Popen:
        args = [sys.executable, "-c", LOAD_SCRIPT, repo_id, *extra, str(tmp_path / out)]
        return subprocess.Popen(args, env={**env, "HF_ENDPOINT": endpoint}, stdout=subprocess.PIPE, text=True)

    with HubServer({"earth-embed/test-r18": saved}) as hub:
        # huggingface_hub retries a refused connection for ~25 s: run the unreachable case alongside the others.
        unreachable = start("earth-embed/test-r18", "http://127.0.0.1:9", "u.pt")
        no_revision = start("earth-embed/test-r18", hub.endpoint, "r.pt", "v9.9")
        no_repo = start("earth-embed/not-there", hub.endpoint, "n.pt")
        outputs = {
            name: p.communicate(timeout=300)[0]
            for name, p in [("unreachable", unreachable), ("no_revision", no_revision), ("no_repo", no_repo)]
        }
        codes = {
            name: p.returncode
            for name, p in [("unreachable", unreachable), ("no_revision", no_revision), ("no_repo", no_repo)]
        }
    assert codes == {"unreachable": 3, "no_revision": 3, "no_repo": 3}, outputs
    assert "Cannot reach the Hugging Face Hub" in outputs["unreachable"], outputs["unreachable"]
    assert "HF_HUB_OFFLINE" not in outputs["unreachable"] and "network" in outputs["unreachable"]
    assert "Revision 'v9.9' does not exist" in outputs["no_revision"], outputs["no_revision"]
    assert "not in the local" not in outputs["no_revision"]
    assert "No model repository 'earth-embed/not-there'" in outputs["no_repo"], outputs["no_repo"]
