# Option C, the classic fallback: d_model 384, 8 layers, 6 heads of 64, GELU MLP 1536, LayerNorm
# (with bias) pre-norm, learned absolute positions, tied: GPT-2's block (Radford et al. 2019).
# 33,860,736 parameters, for a 23-hour budget on 8×V100:
#   torchrun --standalone --nproc_per_node=8 train.py config/option_c.py
# The well-trodden design, for comparison and for tools that only know GPT-2. Option A's recipe
# (docs/recipe.md says why).
from pathlib import Path

exec(Path(__file__).with_name("option_a.py").read_text())

out_dir = "out-option-c"
n_layer = 8
n_head = 6
n_embd = 384
mlp = "gelu"  # 4·d = 1536 hidden, GPT-2's tanh-approximated GELU
norm = "layernorm"
pos_emb = "learned"
