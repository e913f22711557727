"""Independent reference: transformers' GPTBigCodeForCausalLM (StarCoder, SantaCoder),
forward written out in python3-torch in fp64 from the checkpoint's names
(transformers is not installed here) and GPTBigCodeConfig's fields. GPT-2's block
with nn.Linear projections ([out, in]): wte[id] + wpe[position]; h +
c_proj(attention(ln_1(h))), then h + mlp.c_proj(act(mlp.c_fc(ln_2(h)))); LayerNorms
with biases (layer_norm_epsilon). attn.c_attn's output: with multi_query (the
default), q [n_embd] then one key [head_dim] and one value [head_dim] that every head
reads; without it, viewed [.., heads, 3 head_dim] and split per head into q, k, v.
Scores / sqrt(head_dim) unless scale_attn_weights is false; ln_f; logits h wte^T
(tied) or lm_head.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import layer_norm_by_name, peft_linear, read_inputs, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "gpt_bigcode")
E = cfg.get("n_embd", 768)
H = cfg.get("n_head", 12)
L = cfg.get("n_layer", 12)
D = E // H
eps = cfg.get("layer_norm_epsilon", 1e-5)
multi_query = cfg.get("multi_query", True)
scale = D ** -0.5 if cfg.get("scale_attn_weights", True) else 1.0
act_name = cfg.get("activation_function", "gelu_pytorch_tanh")
tanh_gelu = lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))  # noqa: E731
act = {"gelu_pytorch_tanh": tanh_gelu, "gelu_new": tanh_gelu, "gelu": torch.nn.functional.gelu,
       "relu": torch.relu}[act_name]
linear = peft_linear(w, lora, scaling)


layer_norm = layer_norm_by_name(w, eps)


B, T = ids.shape
causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(T)][None]
for i in range(L):
    p = f"transformer.h.{i}."
    qkv = linear(layer_norm(h, p + "ln_1"), p + "attn.c_attn")
    if multi_query:
        q, k, v = qkv.split([E, D, D], -1)
        q = q.view(B, T, H, D).transpose(1, 2)
        k, v = k[:, None], v[:, None]  # [B, 1, T, D]: every head reads them
    else:
        q, k, v = qkv.view(B, T, H, 3 * D).transpose(1, 2).split([D, D, D], -1)
    probs = torch.softmax(q @ k.transpose(-1, -2) * scale + causal, -1)
    o = (probs @ v).transpose(1, 2).reshape(B, T, E)
    h = h + linear(o, p + "attn.c_proj")
    h = h + linear(act(linear(layer_norm(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
h = layer_norm(h, "transformer.ln_f")
write_logits(sys.argv[1], linear(h, "lm_head") if "lm_head.weight" in w else h @ w["transformer.wte.weight"].T)
