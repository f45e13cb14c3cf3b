"""The heads exactly as the reference AutoDeco project builds them (structure and forward
written from docs/design.md section 2 for these tests), so key names and shapes in our tests come
from a real ``torch.nn.Sequential``, not from our own writer."""

import torch
from torch import nn


class OfficialTempHead(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 256), nn.ReLU(), nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, h):
        return self.mlp(h) * 2


class OfficialTopPHead(nn.Module):
    def __init__(self, hidden_size, use_enhanced_features=True):
        super().__init__()
        self.use_enhanced_features = use_enhanced_features
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size + 1 + (4 if use_enhanced_features else 0), 256), nn.ReLU(), nn.Linear(256, 1), nn.Sigmoid()
        )

    def forward(self, h, T, logits):
        if not self.use_enhanced_features:
            return self.mlp(torch.cat([h, T], dim=-1))
        q = torch.softmax(logits / (T + 1e-8), dim=-1)
        stats = torch.cat(
            [
                q.max(dim=-1, keepdim=True)[0],
                -(q * torch.log(q + 1e-8)).sum(dim=-1, keepdim=True),
                q.var(dim=-1, keepdim=True),
                torch.topk(q, min(5, q.size(-1)), dim=-1)[0].sum(dim=-1, keepdim=True),
            ],
            dim=-1,
        )
        return self.mlp(torch.cat([h, T, stats], dim=-1))


class OfficialHeads(nn.Module):
    """Holds the two heads under the official attribute names."""

    def __init__(self, hidden_size, use_enhanced_features=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.temp_head = OfficialTempHead(hidden_size)
        self.top_p_head = OfficialTopPHead(hidden_size, use_enhanced_features)
        with torch.no_grad():  # spread the outputs over their range
            self.temp_head.mlp[2].weight.mul_(6)
            self.top_p_head.mlp[2].weight.mul_(6)

    @torch.no_grad()
    def predict(self, h, logits):
        T = self.temp_head(h)
        return T[..., 0], self.top_p_head(h, T, logits)[..., 0]
