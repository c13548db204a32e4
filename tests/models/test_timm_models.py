"""timm adapter: small random ViT and Swin, every attention on an ablate variant.

Nothing is downloaded: "pretrained" weights are small random models saved to tmp_path (as a
plain file and as a fake Hugging Face cache entry).
"""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import variants  # noqa: E402
from ablate.exceptions import ConfigError  # noqa: E402
from ablate.finetune import freeze_parameters, parameter_depth  # noqa: E402
from ablate.models import create_model  # noqa: E402
from ablate.models._registry import model_entry  # noqa: E402
from ablate.models.compact import VariantAttention  # noqa: E402
from ablate.models.lora import apply_lora, merge_lora  # noqa: E402

VIT = "vit_tiny_patch16_224"
SWIN = "swin_tiny_patch4_window7_224"
# Small random architectures (timm's own keyword arguments, passed through unchanged).
ARCH = {
    VIT: dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3),
    # 32 / 4 = 8x8 patches, windows of 4: stage 1 has shifted windows (0 / -100 mask),
    # stage 2 (4x4) one window; patch merging in between.
    SWIN: dict(img_size=32, window_size=4, embed_dim=24, depths=(2, 2), num_heads=(2, 4)),
}
CLASSES = 5
VALUE_SIDE = ["softmax_v:alpha=0", "alpha_remix:alpha=0"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference(name: str, seed: int = 0) -> torch.nn.Module:
    """timm's own model with random weights; the relative position tables are made large
    enough that a dropped or misplaced bias would show in the logits."""
    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=CLASSES, **ARCH[name])
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("relative_position_bias_table"):
                p.normal_(0, 1.0)
    return model.eval()


def ours(name: str, variant: str = "softmax", **kwargs) -> torch.nn.Module:
    args = {**ARCH[name], **kwargs}
    return create_model(f"timm:{name}", num_classes=CLASSES, variant=variant, **args)


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", [VIT, SWIN])
@pytest.mark.parametrize("variant", ["softmax"] + VALUE_SIDE)
def test_alpha0_reproduces_timm(name, variant):
    ref = reference(name)
    model = ours(name, variant).eval()
    model.model.load_state_dict(ref.state_dict())
    x = images()
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
        if variant != "softmax":
            model.set_variant_params(alpha=0.7)
            assert (model(x) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("name", [VIT, SWIN])
def test_every_attention_has_a_site_and_state_dict_is_timms(name):
    model = ours(name, "softmax_v:alpha=0.25")
    ref = reference(name)
    attn_types = (timm.layers.Attention, timm.models.swin_transformer.WindowAttention)
    attn = [m for m in model.model.modules() if isinstance(m, attn_types)]
    sites = [m for m in model.modules() if isinstance(m, VariantAttention)]
    assert len(attn) == len(sites) == model.num_blocks == (2 if name == VIT else 4)
    assert all(isinstance(getattr(m, "variant_site"), VariantAttention) for m in attn)
    assert model.variant_params() == {"alpha": 0.25}
    model.set_variant_params(alpha=0.5)
    assert all(float(s.alpha) == 0.5 for s in sites)
    # Parameters are buffers, not state: the library's own keys, nothing more.
    assert list(model.model.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("name", [VIT, SWIN])
@pytest.mark.parametrize("spec", variants.list_attention(), ids=lambda s: s.name)
def test_every_registered_variant_forward_backward(name, spec):
    if name == SWIN and not spec.accepts_bias:
        with pytest.raises(ConfigError, match="bias"):
            ours(name, spec.name)
        return
    model = ours(name, spec.name, dropout=0.1, attention_dropout=0.1, stochastic_depth=0.1)
    model.train()
    logits = model(images())
    assert logits.shape == (3, CLASSES) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key


def test_vit_attention_mask_becomes_score_bias():
    ref = reference(VIT)
    model = ours(VIT, "softmax_v:alpha=0").eval()
    model.model.load_state_dict(ref.state_dict())
    x = images()
    n = 1 + (32 // 8) ** 2  # class token + patches
    keep = torch.rand(3, 1, n, n, generator=torch.Generator().manual_seed(2)) > 0.3
    keep |= torch.eye(n, dtype=torch.bool)  # every query keeps itself: no empty row
    with torch.no_grad():
        expected = ref(x, attn_mask=keep)
        torch.testing.assert_close(model.model(x, attn_mask=keep), expected, rtol=1e-5, atol=1e-6)
        assert (expected - ref(x)).abs().max() > 1e-4  # the mask mattered


def test_swin_shift_mask_and_position_bias_are_used():
    model = ours(SWIN, "softmax").eval()
    shifted = [b for b in model.model.modules() if getattr(b, "attn_mask", None) is not None]
    assert shifted, "the small Swin must have shifted windows"
    x = images()
    with torch.no_grad():
        before = model(x)
        for b in shifted:
            b.attn_mask.zero_()  # no region mask: tokens across the wrap-around interact
        assert (model(x) - before).abs().max() > 1e-5


def test_errors_are_one_clear_line():
    with pytest.raises(ConfigError, match="apply_to='attention'"):
        ours(VIT, apply_to="seqpool")
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_model("timm:vit_no_such_model")
    with pytest.raises(ConfigError, match="AttentionPoolLatent"):
        ours(VIT, global_pool="map")  # attention pooling ablate does not drive


def test_entry_carries_timm_preprocessing():
    entry = model_entry(f"timm:{VIT}")
    pre = entry.extras["preprocessing"]
    assert entry.task == "image" and entry.img_size == 224
    assert pre["img_size"] == 224 and pre["in_chans"] == 3
    assert pre["mean"] == (0.5, 0.5, 0.5) and pre["std"] == (0.5, 0.5, 0.5)


# -- pretrained weights: offline by default, local files ---------------------------------


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = tmp_path / "hf-hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    yield hub
    torch.hub.set_dir(old)


def test_pretrained_missing_cache_says_how_to_get_weights(empty_caches):
    with pytest.raises(ConfigError, match="--download") as err:
        ours(VIT, pretrained=True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", [VIT, SWIN])
def test_finetune_from_local_file_starts_exactly_at_source(name, tmp_path):
    source = reference(name, seed=3)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    # num_classes in the overlay: the file's head fits, so timm keeps it (a pretrained head
    # of another class count would be replaced).
    overlay = dict(file=str(path), num_classes=CLASSES)
    model = ours(name, "softmax_v", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    model.set_variant_params(alpha=0.0)  # a schedule's first step
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-6)


def test_pretrained_read_from_the_hugging_face_cache(empty_caches):
    from safetensors.torch import save_file

    source = reference(VIT, seed=4)
    repo = timm.models.get_pretrained_cfg(VIT).hf_hub_id
    snapshot = empty_caches / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    tensors = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(tensors, snapshot / "model.safetensors")
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    overlay = dict(num_classes=CLASSES)  # the cached file's head fits: keep it
    model = ours(VIT, "softmax_v:alpha=0", pretrained=True, pretrained_cfg_overlay=overlay)
    model.eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-6)


# -- fine-tuning protocol: stages, freezing, LoRA -----------------------------------------


def test_stages_freeze_and_lora():
    model = ours(SWIN, "softmax_v:alpha=0")
    n = model.num_blocks
    depth = {k: parameter_depth(k, n, model) for k, _ in model.named_parameters()}
    assert depth["model.patch_embed.proj.weight"] == 0
    assert depth["model.layers.0.blocks.1.attn.qkv.weight"] == 2
    assert depth["model.layers.1.downsample.reduction.weight"] == 3  # goes with the next block
    assert depth["model.layers.1.blocks.1.mlp.fc2.bias"] == 4
    assert depth["model.head.fc.weight"] == depth["model.norm.weight"] == n + 1
    frozen = freeze_parameters(model, "encoder")
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.head.fc.weight", "model.head.fc.bias"] and frozen
    model = ours(VIT, "softmax_v:alpha=0").eval()
    x = images()
    with torch.no_grad():
        before = model(x)
    wrapped = apply_lora(model, rank=2, alpha=4.0)
    assert len(wrapped) == 4 * model.num_blocks  # qkv, proj, fc1, fc2 per block
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "lora_B"):
                m.lora_B.normal_()
        adapted = model(x)
        assert (adapted - before).abs().max() > 1e-4
        torch.testing.assert_close(merge_lora(model)(x), adapted, rtol=1e-5, atol=1e-5)


def test_arch_rebuilds_the_model():
    model = ours(VIT, "alpha_remix:alpha=0.3,beta=1")
    rebuilt = create_model(model.name, **model.arch)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.variant_params() == pytest.approx({"alpha": 0.3, "beta": 1.0})
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_missing_extra_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[timm\]"'):
        create_model(f"timm:{VIT}")
