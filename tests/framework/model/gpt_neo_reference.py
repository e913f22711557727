"""Independent reference: transformers' GPTNeoForCausalLM, forward written out in
python3-torch in fp64 from the checkpoint's names (transformers is not installed
here) and GPTNeoConfig's fields. Embeddings wte[id] + wpe[position]; each block
h + out_proj(attention(ln_1(h))) then h + c_proj(act(c_fc(ln_2(h)))), LayerNorms
with biases (layer_norm_epsilon); q/k/v_proj without biases, out_proj with one;
scores q.k NOT divided by sqrt(head_dim) (GPTNeoSelfAttention._attn); a "local"
layer (attention_types expanded, attention_layers when given) masks keys more than
window_size - 1 positions back (bias ^ tril(bias, -window_size)); ln_f; logits =
h wte^T (tied) or lm_head.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import layer_norm_by_name, peft_linear, read_inputs, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "gpt_neo")
E = cfg.get("hidden_size", 2048)
H = cfg.get("num_heads", 16)
L = cfg.get("num_layers", 24)
D = E // H
eps = cfg.get("layer_norm_epsilon", 1e-5)
window = cfg.get("window_size", 256)
layers = cfg.get("attention_layers")
if not layers:
    layers = [t for types, n in cfg.get("attention_types", [[["global", "local"], 12]]) for _ in range(n) for t in types]
act_name = cfg.get("activation_function", "gelu_new")
act = {"gelu_new": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
       "gelu": torch.nn.functional.gelu, "relu": torch.relu, "silu": torch.nn.functional.silu}[act_name]
linear = peft_linear(w, lora, scaling)


layer_norm = layer_norm_by_name(w, eps)


B, T = ids.shape
i_idx, j_idx = torch.arange(T)[:, None], torch.arange(T)[None, :]
allowed_global = j_idx <= i_idx
allowed_local = allowed_global & (j_idx > i_idx - window)
h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(T)][None]
for i in range(L):
    p = f"transformer.h.{i}."
    x = layer_norm(h, p + "ln_1")
    a = p + "attn.attention."
    q = linear(x, a + "q_proj").view(B, T, H, D).transpose(1, 2)
    k = linear(x, a + "k_proj").view(B, T, H, D).transpose(1, 2)
    v = linear(x, a + "v_proj").view(B, T, H, D).transpose(1, 2)
    allowed = allowed_local if layers[i] == "local" else allowed_global
    scores = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf"))
    o = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, E)
    h = h + linear(o, a + "out_proj")
    h = h + linear(act(linear(layer_norm(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
h = layer_norm(h, "transformer.ln_f")
write_logits(sys.argv[1], linear(h, "lm_head") if "lm_head.weight" in w else h @ w["transformer.wte.weight"].T)
