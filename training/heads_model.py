"""The gender/age heads on the 128-D face embedding (torch only), and their TFLite export.

Kept free of the daemon's imports so the TFLite export can run in the separate litert-torch venv
(see training/requirements.txt), where train_heads.py calls it:

    ../venv-tflite/bin/python -m training.heads_model STATE.pt OUT.tflite
"""

from __future__ import annotations

import sys


def build_heads(torch, hidden: int):
    class Heads(torch.nn.Module):
        """Embedding (N, 128) -> [female probability, age in years] (N, 2)."""

        def __init__(self):
            super().__init__()
            self.trunk = torch.nn.Sequential(torch.nn.Linear(128, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2))
            self.gender = torch.nn.Linear(hidden, 1)
            self.age = torch.nn.Linear(hidden, 1)

        def forward(self, x):
            z = self.trunk(x * 10.0)        # dlib embeddings have components of ~0.1
            return torch.cat([torch.sigmoid(self.gender(z)), 40.0 + 20.0 * self.age(z)], dim=1)
    return Heads()


def export_tflite(state_path: str, out_path: str) -> None:
    """Rebuild the heads from a saved {"hidden", "state"} file and convert them with litert-torch."""
    import torch
    try:
        import litert_torch as converter
    except ImportError:
        import ai_edge_torch as converter
    saved = torch.load(state_path)
    model = build_heads(torch, saved["hidden"])
    model.load_state_dict(saved["state"])
    model.eval()
    converter.convert(model, (torch.zeros(1, 128),)).export(out_path)


if __name__ == "__main__":
    export_tflite(sys.argv[1], sys.argv[2])
