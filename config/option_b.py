# Option B, deeper: d_model 256, 24 layers, 8 heads of 32, SwiGLU 682, RMSNorm, RoPE, tied.
# 31,740,416 parameters, for a 23-hour budget on 8×V100:
#   torchrun --standalone --nproc_per_node=8 train.py config/option_b.py
# The deep-and-thin end of MobileLLM's finding (Liu et al. 2024) that depth beats width below ~125M.
# Option A's recipe, so the two compare cleanly: only the shape changes (docs/recipe.md says why).
from pathlib import Path

exec(Path(__file__).with_name("option_a.py").read_text())

out_dir = "out-option-b"
n_layer = 24
n_head = 8  # heads of 32: twice A's heads, each half as wide
n_embd = 256
