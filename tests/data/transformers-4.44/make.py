"""Writes mask2former/: a tiny random Mask2Former with a Swin backbone, saved by transformers 4.44.2,
as the published facebook/mask2former-swin-* checkpoints were saved by a 4.x version. Those
checkpoints name Swin's weights as 4.x did (self.query, ...) and lack the final layer norm that
transformers 5 puts in the backbone; tests/test_model.py loads this one with the project's loader.

    python -m venv /tmp/v444 && /tmp/v444/bin/pip install torch transformers==4.44.2
    /tmp/v444/bin/python tests/data/transformers-4.44/make.py
"""
from pathlib import Path

import torch
import transformers
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

assert transformers.__version__ == "4.44.2", transformers.__version__
torch.manual_seed(0)
swin = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2],
                  window_size=4, mlp_ratio=1.0, out_features=["stage1", "stage2", "stage3", "stage4"])
config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                           encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                           dim_feedforward=32, num_labels=150, num_queries=10)
Mask2FormerForUniversalSegmentation(config).save_pretrained(Path(__file__).parent / "mask2former")
