"""The networks the recipes train, rebuilt at load time from the ``model`` spec in ``training.json``.

Every model answers ``forward(x) -> (embedding, logits)``: the embedding is the layer before the head,
L2-normalised; the logits are the scaled cosines of the class head (an empty (B, 0) tensor for models
without one), so the encoder and the ONNX export need no recipe-specific code.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

SCRATCH = "scratch"


# ---- a small ResNet trained from scratch --------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.short(x), inplace=True)


class SmallResNet(nn.Module):
    """A ResNet sized for 60x80 thumbnails on two CPU cores: a stride-2 stem and four stages of basic
    blocks (the first at stride 1); about 50 M multiply-adds at 64x48."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), depths: tuple[int, ...] = (1, 1, 1, 1)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))


class TimmBackbone(nn.Module):
    """A timm model without its classifier (pooled features); pretrained weights resolve offline."""

    def __init__(self, name: str, pretrained: bool, workspace: Path | None = None) -> None:
        super().__init__()
        if pretrained:
            from lookalike.encoders.weights import load_backbone

            self.body, self.weights_source = load_backbone(name, pretrained=True, workspace=workspace, num_classes=0)
        else:
            import timm

            self.body, self.weights_source = timm.create_model(name, pretrained=False, num_classes=0), None
        self.out_dim = int(self.body.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    # -- a split at block ``at``, so the early blocks' output can be cached and only the late ones trained --
    def _check_split(self, at: int) -> None:
        b = self.body
        if not all(hasattr(b, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
            raise ValueError(f"fine-tuning late blocks needs an EfficientNet/MobileNet-style timm model "
                             f"(conv_stem, blocks, conv_head), not {type(b).__name__}")
        if not 0 < at < len(b.blocks):
            raise ValueError(f"tune_from must be between 1 and {len(b.blocks) - 1} (the model has "
                             f"{len(b.blocks)} stages), got {at}")

    def early_modules(self, at: int) -> list[nn.Module]:
        self._check_split(at)
        return [self.body.conv_stem, self.body.bn1, *self.body.blocks[:at]]

    def early(self, x: torch.Tensor, at: int) -> torch.Tensor:
        for m in self.early_modules(at):
            x = m(x)
        return x

    def late(self, h: torch.Tensor, at: int) -> torch.Tensor:
        b = self.body
        return b.forward_head(b.bn2(b.conv_head(b.blocks[at:](h))))


class EarlyBlocks(nn.Module):
    """The frozen part of a split backbone, as a module of its own (for export to ONNX)."""

    def __init__(self, backbone: TimmBackbone, at: int) -> None:
        super().__init__()
        self.parts = nn.Sequential(*backbone.early_modules(at))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)


# ---- heads ---------------------------------------------------------------------------------------------
class CosineHead(nn.Module):
    """Normalised softmax: logits are ``scale * cos(embedding, class centre)``; in training the target cosine
    loses ``margin`` first (CosFace), which pulls each class tight and pushes classes apart on the sphere,
    so nearest neighbours in the embedding agree with the classes, not just the argmax."""

    def __init__(self, dim: int, num_classes: int, scale: float = 20.0, margin: float = 0.2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale, self.margin = float(scale), float(margin)

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).t()

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosines(emb)

    def margin_logits(self, cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(target.clamp(min=0), cos.shape[1]).to(cos.dtype)
        return self.scale * (cos - self.margin * onehot)


class EmbeddingNet(nn.Module):
    """backbone -> Linear + BatchNorm (the embedding) -> optional cosine head / projection head."""

    def __init__(self, backbone: nn.Module, embed_dim: int, num_classes: int = 0, scale: float = 20.0,
                 margin: float = 0.2, proj_dim: int = 0, hidden: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        # a hidden layer lets a frozen backbone's features be recombined, not just projected
        mid: list[nn.Module] = ([nn.Linear(backbone.out_dim, hidden, bias=False), nn.BatchNorm1d(hidden),
                                 nn.ReLU(inplace=True), nn.Dropout(0.1)] if hidden else [])
        self.neck = nn.Sequential(nn.Dropout(0.1), *mid, nn.Linear(hidden or backbone.out_dim, embed_dim, bias=False),
                                  nn.BatchNorm1d(embed_dim))
        self.head = CosineHead(embed_dim, num_classes, scale, margin) if num_classes else None
        # SimCLR's projection: the loss lives on its output, the embedding stays one layer below
        self.proj = (nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, proj_dim))
                     if proj_dim else None)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x).float()
        logits = self.head(e) if self.head is not None else e.new_zeros((e.shape[0], 0))
        return F.normalize(e, dim=1), logits


# ---- ENFINT part 3: a convolutional autoencoder ------------------------------------------------------------
class ConvAutoencoder(nn.Module):
    """Conv encoder -> dense bottleneck (the embedding) -> transposed-conv decoder back to the pixels."""

    def __init__(self, size: tuple[int, int], embed_dim: int = 256, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        h, w = size
        down = 2 ** len(widths)
        if h % down or w % down:
            raise ValueError(f"autoencoder input {h}x{w} must be divisible by {down}")
        enc: list[nn.Module] = []
        cin = 3
        for c in widths:
            enc += [nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.grid = (widths[-1], h // down, w // down)
        flat = widths[-1] * (h // down) * (w // down)
        self.bottleneck = nn.Linear(flat, embed_dim)
        self.expand = nn.Sequential(nn.Linear(embed_dim, flat), nn.ReLU(inplace=True))
        dec: list[nn.Module] = []
        for c in list(widths[-2::-1]) + [16]:
            dec += [nn.ConvTranspose2d(cin, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            cin = c
        dec += [nn.Conv2d(cin, 3, 3, 1, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.encoder(x).flatten(1))

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bottleneck, pixels in [0, 1])."""
        z = self.embed(x)
        return z, self.decoder(self.expand(z).view(-1, *self.grid))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x).float()
        return F.normalize(e, dim=1), e.new_zeros((e.shape[0], 0))


# ---- spec -> model ----------------------------------------------------------------------------------------
def make_spec(recipe: str, backbone: str, size: tuple[int, int], embed_dim: int, num_classes: int = 0,
              scale: float = 20.0, margin: float = 0.2, arch: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"recipe": recipe, "backbone": backbone, "input_size": list(size), "embed_dim": embed_dim,
            "num_classes": num_classes, "scale": scale, "margin": margin, "arch": arch or {}}


def build_model(spec: dict[str, Any], pretrained: bool = False, workspace: Path | None = None) -> nn.Module:
    """The network of ``spec``; ``pretrained`` loads backbone weights (training), else they come from model.pt."""
    arch = spec.get("arch") or {}
    if spec["recipe"] == "autoencoder":
        return ConvAutoencoder(tuple(spec["input_size"]), spec["embed_dim"], tuple(arch.get("widths", (32, 64, 128))))
    name = spec["backbone"]
    if name == SCRATCH:
        backbone: nn.Module = SmallResNet(tuple(arch.get("widths", (32, 64, 128, 256))),
                                          tuple(arch.get("depths", (1, 1, 1, 1))))
    elif name.startswith("timm:"):
        backbone = TimmBackbone(name.split(":", 1)[1], pretrained, workspace)
    else:
        raise ValueError(f"unknown backbone {name!r}: use 'scratch' or 'timm:<model name>'")
    proj = int(arch.get("proj_dim", 128)) if spec["recipe"] == "contrastive" else 0
    num_classes = spec["num_classes"] if spec["recipe"] == "classifier" else 0
    return EmbeddingNet(backbone, spec["embed_dim"], num_classes, spec["scale"], spec["margin"], proj,
                        int(arch.get("neck_hidden", 0)))


def weights_source(model: nn.Module) -> str | None:
    bb = getattr(model, "backbone", None)
    return getattr(bb, "weights_source", None)


def load_trained(model_dir: Path, spec: dict[str, Any]) -> nn.Module:
    """The trained network of a model folder, in eval mode."""
    model = build_model(spec, pretrained=False)
    state = torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
