"""ACM-Net (action-context modelling network), the backbone of FTCL, on pre-extracted snippet features.

Layers, parameter names and forward follow the FTCL repo, model/ACMNet.py (FTCLNet in model/FTCLNet.py is the same
network): an embedding conv, a 3-way attention (action instance / action context / background), a snippet
classifier over C actions + background (background is the LAST class), top-k pooled video scores per branch, and
the proposal sequences FTCL compares (LCS and FSD candidates). State-dict keys equal the reference's, so an FTCL
checkpoint ``{'epoch', 'model_state_dict'}`` loads strictly with no renaming.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ACMNet", "ACMNetOutput", "build_acmnet", "load_ftcl_checkpoint_state", "load_ftcl_checkpoint"]


@dataclass
class ACMNetOutput:
    """ACM-Net outputs by name; B batch, T snippets, C+1 classes (background last), D feature width."""

    inst_scores: Tensor   # (B, C+1) video probabilities of the action-instance branch
    cont_scores: Tensor   # (B, C+1) action-context branch
    back_scores: Tensor   # (B, C+1) background branch
    inst_feature: Tensor  # (B, D) mean embedding of the top-k instance-attended snippets
    cont_feature: Tensor  # (B, D)
    back_feature: Tensor  # (B, D)
    attention: Tensor     # (B, T, 3) softmax over (instance, context, background)
    inst_cas: Tensor      # (B, T, C+1) softmax of instance-weighted snippet logits
    cas: Tensor           # (B, T, C+1) softmax of the plain snippet logits
    cont_cas: Tensor      # (B, T, C+1)
    back_cas: Tensor      # (B, T, C+1)
    lcs_candidates: Tensor  # (B, min(T, 30), D) top instance-attended embeddings in time order
    fsd_act: Tensor       # (B, 5, fc_dim) ranks 1-5 by instance attention, time order, through feature_trans
    fsd_bak: Tensor       # (B, 5, fc_dim) ranks 6-10 (near-action, not background: FTCL repo behaviour)

    def as_tuple(self) -> tuple[Tensor, ...]:
        """The 14 outputs in the reference's tuple order (FTCL repo, model/ACMNet.py)."""
        return tuple(getattr(self, f.name) for f in fields(self))


def _topk_mean(x: Tensor, k: int) -> Tensor:
    """Mean of the k largest values over time: (B, T, K) -> (B, K)."""
    return torch.sort(x, dim=1, descending=True)[0][:, :k].mean(dim=1)


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """x (B, T, D) at time indices (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class ACMNet(nn.Module):
    """ACM-Net with FTCL's candidate heads; input (B, T, feature_dim), output ``ACMNetOutput``."""

    def __init__(self, feature_dim: int = 2048, num_classes: int = 20, dropout: float = 0.7,
                 inst_topk_div: int = 8, cont_topk_div: int = 3, back_topk_div: int = 3,
                 fc_dim: int = 1024, lcs_len: int = 30, fsd_len: int = 5, input_dropout: bool = False) -> None:
        super().__init__()
        if fc_dim % 2:
            raise ValueError(f"fc_dim={fc_dim}: must be even (FSD splits it into match and gap halves)")
        self.num_classes = num_classes
        self.topk_divs = (inst_topk_div, cont_topk_div, back_topk_div)
        self.lcs_len, self.fsd_len = lcs_len, fsd_len
        self.dropout = nn.Dropout(dropout)
        # ActivityNet variant of the ACM-Net repo (model/ACMNet.py, any dataset but THUMOS): the same dropout also on
        # the input features before the embedding conv and on the embedding before the attention branch.
        self.input_dropout = input_dropout
        # Index 0 holds the conv so the key is feature_embedding.0.* as in the reference.
        self.feature_embedding = nn.Sequential(
            nn.Conv1d(feature_dim, feature_dim, kernel_size=3, padding=1), nn.ReLU())
        self.att_branch = nn.Conv1d(feature_dim, 3, kernel_size=1)
        self.snippet_cls = nn.Linear(feature_dim, num_classes + 1)
        self.feature_trans = nn.Linear(feature_dim, fc_dim)

    def forward(self, x: Tensor) -> ACMNetOutput:
        """Snippet features (B, T, feature_dim) -> named outputs (dropout only in training mode)."""
        b, t, _ = x.shape
        inp = x.transpose(1, 2)
        emb = self.feature_embedding(self.dropout(inp) if self.input_dropout else inp)  # (B, D, T)
        att = F.softmax(self.att_branch(self.dropout(emb) if self.input_dropout else emb), dim=1).transpose(1, 2)
        emb = emb.transpose(1, 2)                                          # (B, T, D), the un-dropped E0
        dropped = emb
        if self.training:
            # Snippet-level dropout: ordinary dropout on a ones mask keeps ~30% of snippets scaled by 1/0.3,
            # then element-wise dropout on top (FTCL repo, model/ACMNet.py).
            mask = self.dropout(torch.ones(b, t, 1, device=x.device, dtype=x.dtype))
            dropped = self.dropout(emb * mask)
        logits = self.snippet_cls(dropped)                                 # (B, T, C+1)
        branch_logits = [logits * att[..., i:i + 1] for i in range(3)]
        ks = [max(t // div, 1) for div in self.topk_divs]
        scores = [F.softmax(_topk_mean(s, k), dim=1) for s, k in zip(branch_logits, ks)]
        feats = []
        for i, k in enumerate(ks):
            idx = torch.sort(att[..., i], dim=1, descending=True)[1][:, :k]
            feats.append(_gather_time(emb, idx).mean(dim=1))
        # FTCL candidates: all ranked by instance attention, re-sorted by time; sort/gather carry no gradient.
        order = torch.sort(att[..., 0], dim=1, descending=True)[1]
        lcs_idx = torch.sort(order[:, :self.lcs_len], dim=1)[0]
        act_idx = torch.sort(order[:, :self.fsd_len], dim=1)[0]
        bak_idx = torch.sort(order[:, self.fsd_len:2 * self.fsd_len], dim=1)[0]
        return ACMNetOutput(
            inst_scores=scores[0], cont_scores=scores[1], back_scores=scores[2],
            inst_feature=feats[0], cont_feature=feats[1], back_feature=feats[2], attention=att,
            inst_cas=F.softmax(branch_logits[0], dim=2), cas=F.softmax(logits, dim=2),
            cont_cas=F.softmax(branch_logits[1], dim=2), back_cas=F.softmax(branch_logits[2], dim=2),
            lcs_candidates=_gather_time(emb, lcs_idx),
            fsd_act=self.feature_trans(_gather_time(emb, act_idx)),
            fsd_bak=self.feature_trans(_gather_time(emb, bak_idx)))

    def forward_pair(self, x1: Tensor, x2: Tensor) -> tuple[ACMNetOutput, ACMNetOutput]:
        """Both videos of FTCL pairs through the same weights (independent dropout), like FTCLNet(flag=True)."""
        return self(x1), self(x2)


def build_acmnet(feature_dim: int = 2048, num_classes: int = 20, **options: object) -> ACMNet:
    """ACM-Net with the THUMOS14 defaults of the FTCL repo (dropout 0.7, top-k 8/3/3, fc_dim 1024)."""
    return ACMNet(feature_dim=feature_dim, num_classes=num_classes, **options)  # type: ignore[arg-type]


def _read_ftcl_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint file") from None
    except Exception as error:  # noqa: BLE001 - pickle/zip errors: not a torch checkpoint, or not weights-only
        raise ValueError(f"{path}: not a readable weights-only torch checkpoint ({error})") from None
    if not isinstance(blob, dict) or "model_state_dict" not in blob:
        keys = sorted(blob)[:5] if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: not the FTCL checkpoint layout {{'epoch', 'model_state_dict'}} (found {keys})")
    state = blob["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: 'model_state_dict' is not a mapping of names to tensors")
    return blob


def load_ftcl_checkpoint_state(path: str | Path) -> dict[str, Tensor]:
    """The ``model_state_dict`` of an FTCL-repo checkpoint ``{'epoch', 'model_state_dict'}`` (weights only)."""
    return dict(_read_ftcl_checkpoint(path)["model_state_dict"])


def load_ftcl_checkpoint(model: ACMNet, path: str | Path) -> int | None:
    """Load an FTCL-repo checkpoint strictly into ``model``; returns its stored epoch (None if absent)."""
    blob = _read_ftcl_checkpoint(path)
    result = model.load_state_dict(blob["model_state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: keys do not match ACMNet: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")
    epoch = blob.get("epoch")
    return int(epoch) if epoch is not None else None
