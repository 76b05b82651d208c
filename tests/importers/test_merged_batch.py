"""rosetta.from_torch of views that merge the batch axis with other rows (Swin's window
partition and reverse, with a shifted window's roll, the attention mask add and a zero pad;
MobileViT's bilinear resize), held unmerged (``torch_merged``), and the readers that would mix
examples, refused in one line. Tiny: 8x8 maps, float64, torch certificate of 1 step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional

import rosetta  # noqa: E402
from rosetta.importers import ImportRefused  # noqa: E402


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


class Windows(nn.Module):
    """A Swin block's attention in miniature: (B, C, 8, 8) -> (B, 8, 8, C), rolled by half a
    window, zero-padded, partitioned into 4x4 windows ((B*4, 16, C): the batch merged with the
    windows), window attention with a relative bias and the shifted-window mask
    (``attn.view(B_ // nW, nW, nH, N, N) + mask``), reversed and rolled back."""

    def __init__(self, c=8, heads=2, ws=4):
        super().__init__()
        self.c, self.heads, self.ws = c, heads, ws
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.norm = nn.LayerNorm(c)
        self.bias = nn.Parameter(torch.randn(heads, ws * ws, ws * ws) * 0.1)
        self.head = nn.Linear(c, 3)
        mask = torch.zeros(4, ws * ws, ws * ws)
        mask[1:, :5, 9:] = -100.0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        B, H, W, C = x.shape
        ws, nh = self.ws, self.heads
        x = torch.roll(x, shifts=(-2, -2), dims=(1, 2))
        x = F.pad(x, (0, 0, 0, 0, 0, 0))
        w = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).contiguous()
        w = w.view(-1, ws * ws, C)                              # (B*nW, N, C)
        B_, N, _ = w.shape
        q, k, v = self.qkv(self.norm(w)).reshape(B_, N, 3, nh, -1).permute(2, 0, 3, 1, 4) \
            .unbind(0)
        attn = (q * 0.5) @ k.transpose(-2, -1) + self.bias.unsqueeze(0)
        nw = self.mask.shape[0]
        attn = attn.view(-1, nw, nh, N, N) + self.mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, nh, N, N).softmax(-1)
        y = self.proj((attn @ v).transpose(1, 2).reshape(B_, N, -1))
        y = y.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        y = torch.roll(y, shifts=(2, 2), dims=(1, 2))
        return self.head((x + y).mean((1, 2)))


def test_window_partition_and_reverse_certify():
    torch.manual_seed(0)
    model = Windows().double()
    imp = rosetta.from_torch(model, _x(2, 8, 8, 8), loss=nn.CrossEntropyLoss(),
                             optimizer=torch.optim.Adam(model.parameters(), 1e-3))
    ops = {n.op for n in imp.spec.model.nodes}
    assert "Concatenate" in ops and "Pad" not in ops   # the roll; the zero pad is nothing
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class Resize(nn.Module):
    """MobileViT's resize to a multiple of its patch size and back (bilinear), a constant pad
    and a merged (B*4, ...) view of patches read by a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv(x)                                         # (B, 4, 3, 5)
        x = F.interpolate(x, size=(4, 6), mode="bilinear", align_corners=False)
        B, C, H, W = x.shape
        p = x.reshape(B * C * 2, 2, 3, 2).transpose(1, 2).reshape(B, C, 6, 4).transpose(1, 3)
        p = self.fc(p.reshape(B * 4, 6, C))                      # (B*4, 6, C) patches
        x = p.view(B, 4, 6, C).transpose(1, 3).reshape(B * C * 2, 3, 2, 2).transpose(1, 2)
        x = x.reshape(B, C, H, W)
        x = F.interpolate(x, size=(3, 5), mode="bilinear", align_corners=True)
        x = F.pad(x, (1, 2, 0, 1), value=0.5)
        return self.head(x.mean((2, 3)))


def test_bilinear_resize_patches_and_pad_certify():
    torch.manual_seed(0)
    imp = rosetta.from_torch(Resize().double(), _x(2, 3, 3, 5), loss=nn.CrossEntropyLoss())
    ops = [n.op for n in imp.spec.model.nodes]
    assert "Pad" in ops and ops.count("MatMul") == 2, ops
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class Mixes(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        y = x.reshape(-1, 12)                                   # (B*3, 12): merged
        if self.how == "softmax":
            return self.fc(y.softmax(0).reshape(x.shape[0], -1)[:, :12])
        if self.how == "view":
            return self.fc(y.reshape(-1, 24)[:, :12])          # (B*3/2, 24)
        if self.how == "reflect":
            return self.fc(F.pad(x, (1, 1, 1, 1), mode="reflect").mean((2, 3))[:, :1].expand(-1, 12))
        return self.fc(y)                                       # the output stays merged


@pytest.mark.parametrize("how,line", [
    ("softmax", "aten.softmax.int over the batch axis merged with other rows"),
    ("view", "(its first axis is not a multiple of the batch, 2: it would mix examples)"),
    ("output", "the output (6, 2) has its batch axis merged with other rows"),
    ("reflect", "F.pad(mode='reflect')"),
])
def test_readers_that_mix_examples_are_refused_in_one_line(how, line):
    with pytest.raises(ImportRefused) as e:
        rosetta.from_torch(Mixes(how).double(), _x(2, 4, 3, 3))
    assert len(e.value.lines) == 1 and line in e.value.lines[0], e.value.lines
